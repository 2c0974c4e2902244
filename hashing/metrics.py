"""Retrieval evaluation of binary hash codes: mAP, mAP@k, precision@k, radius precision, PR curve.

Codes are real-valued network outputs `[N, num_bits]`; a bit is set where the output is > 0.
Codes are packed 8 bits per byte with `np.packbits(..., axis=1)` into uint8 `[N, W]`,
`W = ceil(num_bits / 8)`. Labels are multi-hot `[N, L]` (one-hot for single-label data); a
database item is relevant to a query when they share at least one label.

Conventions (all metrics are means over *all* queries unless stated otherwise):
  * Ranking: ascending Hamming distance, ties broken by database index. `hashing.retrieval`
    computes it by counting (distances are integers 0..num_bits), without a sort.
  * "mAP" is whole-database mAP (every database item is ranked); "mAP@k" only looks at the top
    k and divides by the number of relevant items in the top k (DeepHash-pytorch convention).
  * A query with no relevant item (or none in the top k, for mAP@k) contributes AP 0.
  * A query that retrieves nothing within a Hamming radius contributes precision 0 to
    `precision_radius{r}`.
  * k larger than the database size is clipped to the database size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hashing import retrieval


def pack_codes(codes: np.ndarray) -> np.ndarray:
  """Binarises and packs codes: `[N, num_bits]` float -> uint8 `[N, ceil(num_bits / 8)]`."""
  return np.packbits(np.asarray(codes) > 0, axis=1)


def hamming_distances(query_packed: np.ndarray, database_packed: np.ndarray) -> np.ndarray:
  """Hamming distances `[Q, N]` int32 between packed codes uint8 `[Q, W]` and `[N, W]`:
  `dist[i, j] = popcount(query[i] XOR database[j])` (see `retrieval.hamming_distances`)."""
  return retrieval.hamming_distances(query_packed, database_packed)


def _label_matrix(labels: np.ndarray) -> np.ndarray:
  # float32 so the label overlap goes through BLAS; an integer (or uint8) matmul is slow and
  # uint8 would wrap around at 256 shared labels. Counts are exact in float32 up to 2**24.
  return (np.asarray(labels) > 0).astype(np.float32)


def _check_labels(
  query_labels: np.ndarray, database_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  query_labels = np.asarray(query_labels)
  database_labels = np.asarray(database_labels)
  if query_labels.ndim != 2 or database_labels.ndim != 2:
    raise ValueError(
      f"labels must be 2-D multi-hot arrays [rows, num_labels]; got shapes "
      f"{query_labels.shape} and {database_labels.shape}"
    )
  if query_labels.shape[1] != database_labels.shape[1]:
    raise ValueError(
      f"query and database labels have different numbers of classes: "
      f"{query_labels.shape[1]} vs {database_labels.shape[1]}"
    )
  return query_labels, database_labels


def relevance(query_labels: np.ndarray, database_labels: np.ndarray) -> np.ndarray:
  """Relevance `[Q, N]` bool: `(Yq @ Yd.T) > 0`, i.e. the two items share at least one label.

  Args:
    query_labels: multi-hot `[Q, L]`.
    database_labels: multi-hot `[N, L]`.
  """
  query_labels, database_labels = _check_labels(query_labels, database_labels)
  return (_label_matrix(query_labels) @ _label_matrix(database_labels).T) > 0


def _check_ks(name: str, ks: Sequence[int]) -> list[int]:
  ks = [int(k) for k in ks]
  if any(k < 1 for k in ks):
    raise ValueError(f"{name} values must be >= 1; got {ks}")
  return ks


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
  """numerator / denominator elementwise (broadcast), 0.0 where the denominator is 0."""
  numerator, denominator = np.broadcast_arrays(
    np.asarray(numerator, dtype=np.float64), np.asarray(denominator)
  )
  out = np.zeros(numerator.shape)
  np.divide(numerator, denominator, out=out, where=denominator != 0)
  return out


def evaluate(
  query_packed: np.ndarray,
  database_packed: np.ndarray,
  query_labels: np.ndarray,
  database_labels: np.ndarray,
  *,
  num_bits: int,
  map_at: Sequence[int] = (),
  precision_at: Sequence[int] = (1, 10, 50, 100, 500, 1000),
  radius: int = 2,
  query_chunk: int = 100,
) -> dict[str, Any]:
  """Retrieval metrics of packed binary codes; see the module docstring for the conventions.

  For query i, let rel(r) be 1 when the database item at rank r (1-based, ascending Hamming
  distance, ties by database index) is relevant, P(r) = (sum_{s<=r} rel(s)) / r, R_i the number
  of relevant database items, and within(d) / relwithin(d) the numbers of all / relevant items
  at Hamming distance <= d.

  Args:
    query_packed: uint8 `[Q, W]` packed query codes.
    database_packed: uint8 `[N, W]` packed database codes.
    query_labels: multi-hot `[Q, L]`.
    database_labels: multi-hot `[N, L]`.
    num_bits: code length, `1 <= num_bits <= 8 * W`; bits past `num_bits` (the packing padding)
      must be zero. The PR curve has `num_bits + 1` points.
    map_at: k values for mAP@k.
    precision_at: k values for precision@k.
    radius: Hamming radius for `precision_radius{radius}` (a radius above num_bits acts as
      num_bits: everything is retrieved).
    query_chunk: queries per jitted call when the ranking runs on an accelerator (memory
      O(query_chunk * N) there); the CPU engine needs O(N) per thread.

  Returns:
    A dict of plain Python values (JSON-ready, no NaN):
      "map": mean_i AP_i, AP_i = (1 / R_i) sum_r P(r) rel(r) over all N ranks; 0 if R_i = 0.
      "map_at": {str(k): mean_i AP@k_i}, AP@k_i = sum_{r<=k} P(r) rel(r) / sum_{r<=k} rel(r);
        0 when no relevant item is in the top k. k is clipped to N.
      f"precision_radius{radius}": mean_i relwithin(radius) / within(radius); a query that
        retrieves nothing counts as 0.
      "precision_at_k": {"k": requested ks, "precision": mean_i sum_{r<=k'} rel(r) / k'} with
        k' = min(k, N).
      "pr_curve": {"radius": [0..num_bits], "precision": [...], "recall": [...]}:
        recall(d) = mean over queries with R_i >= 1 of relwithin(d) / R_i;
        precision(d) = mean over queries with within(d) >= 1 of relwithin(d) / within(d).
        Either is 0.0 when no query qualifies.
      "num_queries": Q, "num_database": N.
      "constant_bits": how many of the num_bits bits take one value on every database code
        (bits that separate nothing: the code works as a shorter one).

  Raises:
    ValueError: on inconsistent shapes, bad dtypes, or out-of-range arguments.
  """
  query_packed = retrieval.check_packed("query_packed", query_packed)
  database_packed = retrieval.check_packed("database_packed", database_packed)
  retrieval.check_same_width(query_packed, database_packed)
  query_labels, database_labels = _check_labels(query_labels, database_labels)
  num_queries, width = query_packed.shape
  num_database = database_packed.shape[0]
  if query_labels.shape[0] != num_queries:
    raise ValueError(
      f"query labels have {query_labels.shape[0]} rows but there are {num_queries} query codes"
    )
  if database_labels.shape[0] != num_database:
    raise ValueError(
      f"database labels have {database_labels.shape[0]} rows but there are {num_database} "
      f"database codes"
    )
  if num_queries == 0 or num_database == 0:
    raise ValueError(
      f"need at least one query and one database item; got {num_queries} and {num_database}"
    )
  num_bits = int(num_bits)
  if not 1 <= num_bits <= 8 * width:
    raise ValueError(
      f"num_bits={num_bits} does not fit packed codes of {width} bytes (need 1..{8 * width})"
    )
  # Set padding bits would make distances exceed num_bits and break the per-distance histogram;
  # they mean num_bits is wrong or the codes were not packed by pack_codes.
  padding_mask = np.packbits(np.arange(8 * width) >= num_bits)
  if np.any(query_packed & padding_mask) or np.any(database_packed & padding_mask):
    raise ValueError(
      f"packed codes have bits set beyond num_bits={num_bits}; is num_bits the code length?"
    )
  map_at = _check_ks("map_at", map_at)
  precision_at = _check_ks("precision_at", precision_at)
  radius = int(radius)
  if radius < 0:
    raise ValueError(f"radius must be >= 0; got {radius}")
  query_chunk = int(query_chunk)
  if query_chunk < 1:
    raise ValueError(f"query_chunk must be >= 1; got {query_chunk}")

  # The engine ranks by counting (no sort) and returns per-query results, so the output does
  # not depend on how queries are split over threads, not even in the last floating-point bit.
  stats = retrieval.ranking_stats(
    query_packed,
    database_packed,
    query_labels,
    database_labels,
    num_bits=num_bits,
    map_at=map_at,
    precision_at=precision_at,
    query_chunk=query_chunk,
  )
  hist_all, hist_rel = stats.hist_all, stats.hist_rel  # [Q, num_bits + 1] at distance exactly d
  num_dist = num_bits + 1
  precision_at_values = stats.hits_at / np.array(
    [min(k, num_database) for k in precision_at], dtype=np.float64
  )  # [Q, len(precision_at)]

  within_all = np.cumsum(hist_all, axis=1)  # [Q, num_bits + 1]: retrieved within radius d.
  within_rel = np.cumsum(hist_rel, axis=1)  # [Q, num_bits + 1]: relevant within radius d.
  precision_within = _safe_ratio(within_rel, within_all)
  total_rel = within_rel[:, -1]
  has_rel = total_rel > 0
  recall_within = _safe_ratio(within_rel, total_rel[:, None])
  has_retrieved = within_all > 0
  pr_precision = _safe_ratio(precision_within.sum(axis=0), has_retrieved.sum(axis=0))
  pr_recall = _safe_ratio(recall_within[has_rel].sum(axis=0), np.full(num_dist, has_rel.sum()))

  return {
    "map": float(stats.ap.mean()),
    "map_at": {str(k): float(v.mean()) for k, v in zip(map_at, stats.ap_at.T, strict=True)},
    f"precision_radius{radius}": float(precision_within[:, min(radius, num_bits)].mean()),
    "precision_at_k": {
      "k": precision_at,
      "precision": [float(v.mean()) for v in precision_at_values.T],
    },
    "pr_curve": {
      "radius": list(range(num_dist)),
      "precision": [float(v) for v in pr_precision],
      "recall": [float(v) for v in pr_recall],
    },
    "num_queries": int(num_queries),
    "num_database": int(num_database),
    "constant_bits": count_constant_bits(database_packed, num_bits),
  }


def count_constant_bits(packed: np.ndarray, num_bits: int) -> int:
  """How many of the first `num_bits` bits of packed codes uint8 `[N, W]` are equal in all N."""
  ones = np.unpackbits(packed, axis=1, count=num_bits).sum(axis=0)  # [num_bits]
  return int(np.sum((ones == 0) | (ones == packed.shape[0])))
