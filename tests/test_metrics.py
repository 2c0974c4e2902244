"""Tests of hashing.metrics against brute-force Python references and hand-computed cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hashing import metrics

MAP_AT = (1, 10, 50, 1000)
PRECISION_AT = (1, 10, 50, 100, 1000)


# ---------------------------------------------------------------------------------------------
# Brute-force references: plain Python loops over queries and database items, by definition.
# ---------------------------------------------------------------------------------------------


def _ref_distances(query_bits: np.ndarray, database_bits: np.ndarray) -> list[list[int]]:
  return [
    [sum(int(a != b) for a, b in zip(qb, db, strict=True)) for db in database_bits]
    for qb in query_bits
  ]


def _ref_relevance(query_labels: np.ndarray, database_labels: np.ndarray) -> list[list[bool]]:
  return [
    [any(a > 0 and b > 0 for a, b in zip(yq, yd, strict=True)) for yd in database_labels]
    for yq in query_labels
  ]


def _ref_metrics(query_bits, database_bits, query_labels, database_labels, radius=2):
  """All metrics by definition, with Python loops; bits are unpacked 0/1 arrays [rows, q]."""
  num_bits = query_bits.shape[1]
  dist = _ref_distances(query_bits, database_bits)
  rel = _ref_relevance(query_labels, database_labels)
  n = len(database_bits)
  aps, aps_at, prec_at, prec_radius = [], {k: [] for k in MAP_AT}, {k: [] for k in PRECISION_AT}, []
  pr_prec = [[] for _ in range(num_bits + 1)]
  pr_rec = [[] for _ in range(num_bits + 1)]
  for i in range(len(query_bits)):
    ranking = sorted(range(n), key=lambda j, i=i: (dist[i][j], j))
    ranked_rel = [rel[i][j] for j in ranking]
    # Precision at each rank where a relevant item sits.
    hits, precisions = 0, []
    for r, is_rel in enumerate(ranked_rel, start=1):
      if is_rel:
        hits += 1
        precisions.append((hits / r, r))
    aps.append(sum(p for p, _ in precisions) / len(precisions) if precisions else 0.0)
    for k in MAP_AT:
      top = [p for p, r in precisions if r <= min(k, n)]
      aps_at[k].append(sum(top) / len(top) if top else 0.0)
    for k in PRECISION_AT:
      kk = min(k, n)
      prec_at[k].append(sum(ranked_rel[:kk]) / kk)
    total_rel = sum(rel[i])
    for d in range(num_bits + 1):
      retrieved = [j for j in range(n) if dist[i][j] <= d]
      rel_retrieved = sum(rel[i][j] for j in retrieved)
      if retrieved:
        pr_prec[d].append(rel_retrieved / len(retrieved))
      if total_rel:
        pr_rec[d].append(rel_retrieved / total_rel)
      if d == radius:
        prec_radius.append(rel_retrieved / len(retrieved) if retrieved else 0.0)

  def mean(values):
    return sum(values) / len(values) if values else 0.0

  return {
    "map": mean(aps),
    "map_at": {str(k): mean(v) for k, v in aps_at.items()},
    f"precision_radius{radius}": mean(prec_radius),
    "precision_at_k": {
      "k": list(PRECISION_AT),
      "precision": [mean(prec_at[k]) for k in PRECISION_AT],
    },
    "pr_curve": {
      "radius": list(range(num_bits + 1)),
      "precision": [mean(v) for v in pr_prec],
      "recall": [mean(v) for v in pr_rec],
    },
    "num_queries": len(query_bits),
    "num_database": n,
    "constant_bits": sum(len({code[b] for code in database_bits}) == 1 for b in range(num_bits)),
  }


def _assert_metrics_close(actual: dict, expected: dict) -> None:
  assert set(actual) == set(expected)
  for key, value in expected.items():
    if isinstance(value, dict):
      assert set(actual[key]) == set(value), key
      for sub, sub_value in value.items():
        np.testing.assert_allclose(actual[key][sub], sub_value, rtol=1e-12, atol=1e-12)
    else:
      np.testing.assert_allclose(actual[key], value, rtol=1e-12, atol=1e-12, err_msg=key)


# ---------------------------------------------------------------------------------------------
# Random data.
# ---------------------------------------------------------------------------------------------


def _random_labels(rng: np.random.Generator, rows: int, multi_label: bool) -> np.ndarray:
  if not multi_label:
    return np.eye(4, dtype=np.uint8)[rng.integers(0, 4, rows)]
  labels = (rng.random((rows, 6)) < 0.2).astype(np.uint8)
  labels[rng.random(rows) < 0.15] = 0  # Some all-zero rows: queries with no relevant item.
  return labels


def _random_case(seed: int, num_bits: int, multi_label: bool, num_queries=20, num_database=150):
  rng = np.random.default_rng(seed)
  # Queries and database items are noisy copies of a few prototypes, so that Hamming ties are
  # common and small radii retrieve something even for 48 bits; a few queries are pure noise.
  prototypes = rng.standard_normal((10, num_bits))

  def noisy_copies(rows: int, flip_rate: float) -> np.ndarray:
    codes = prototypes[rng.integers(0, 10, rows)]
    return np.where(rng.random(codes.shape) < flip_rate, -codes, codes)

  database_codes = noisy_copies(num_database, 0.05)
  query_codes = noisy_copies(num_queries, 0.05)
  query_codes[: num_queries // 4] = rng.standard_normal((num_queries // 4, num_bits))
  return (
    query_codes,
    database_codes,
    _random_labels(rng, num_queries, multi_label),
    _random_labels(rng, num_database, multi_label),
  )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("num_bits", [8, 12, 48])
@pytest.mark.parametrize("multi_label", [False, True])
def test_evaluate_matches_brute_force(seed, num_bits, multi_label):
  query_codes, database_codes, query_labels, database_labels = _random_case(
    seed, num_bits, multi_label
  )
  result = metrics.evaluate(
    metrics.pack_codes(query_codes),
    metrics.pack_codes(database_codes),
    query_labels,
    database_labels,
    num_bits=num_bits,
    map_at=MAP_AT,
    precision_at=PRECISION_AT,
    query_chunk=7,
  )
  expected = _ref_metrics(
    (query_codes > 0).astype(np.uint8),
    (database_codes > 0).astype(np.uint8),
    query_labels,
    database_labels,
  )
  _assert_metrics_close(result, expected)
  json.dumps(result, allow_nan=False)  # JSON-ready, no NaN.


def test_multi_label_case_has_queries_without_relevant_items():
  # Guards the random multi-label data: it must exercise the "no relevant item" convention.
  _, _, query_labels, database_labels = _random_case(0, 12, multi_label=True)
  rel = metrics.relevance(query_labels, database_labels)
  assert (~rel.any(axis=1)).any() and rel.any(axis=1).any()


@pytest.mark.parametrize("query_chunk", [1, 7, 100])
def test_result_is_independent_of_query_chunk(query_chunk):
  query_codes, database_codes, query_labels, database_labels = _random_case(3, 12, True, 30)
  args = (
    metrics.pack_codes(query_codes),
    metrics.pack_codes(database_codes),
    query_labels,
    database_labels,
  )
  kwargs = dict(num_bits=12, map_at=(5, 50))
  whole = metrics.evaluate(*args, **kwargs, query_chunk=1000)
  assert metrics.evaluate(*args, **kwargs, query_chunk=query_chunk) == whole


# ---------------------------------------------------------------------------------------------
# Packing, distances, relevance.
# ---------------------------------------------------------------------------------------------


def test_pack_codes_matches_packbits_order():
  codes = np.array([[0.5, -1.0, 2.0, 0.0, 3.0, -2.0, 1.0, 1.0, -0.1, 4.0]])
  packed = metrics.pack_codes(codes)
  # Bits 1 0 1 0 1 0 1 1 | 0 1 (zero padding): big-endian within each byte, as np.packbits.
  np.testing.assert_array_equal(packed, np.array([[0b10101011, 0b01000000]], dtype=np.uint8))
  np.testing.assert_array_equal(packed, np.packbits(codes > 0, axis=1))
  assert packed.dtype == np.uint8


@pytest.mark.parametrize("num_bits", [12, 64, 72])
def test_hamming_distances_matches_unpacked_reference(num_bits):
  rng = np.random.default_rng(num_bits)
  query_bits = rng.integers(0, 2, (9, num_bits), dtype=np.uint8)
  database_bits = rng.integers(0, 2, (13, num_bits), dtype=np.uint8)
  dist = metrics.hamming_distances(
    np.packbits(query_bits, axis=1), np.packbits(database_bits, axis=1)
  )
  assert dist.shape == (9, 13)
  assert np.issubdtype(dist.dtype, np.integer)
  np.testing.assert_array_equal(dist, _ref_distances(query_bits, database_bits))


def test_relevance_shares_a_label():
  query_labels = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]], dtype=np.uint8)
  database_labels = np.array([[1, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=np.uint8)
  np.testing.assert_array_equal(
    metrics.relevance(query_labels, database_labels),
    [[True, False, False], [True, True, False], [False, False, False]],
  )


def test_relevance_does_not_wrap_around_with_many_shared_labels():
  # A uint8 matmul would count 256 shared labels as 0.
  labels = np.ones((1, 256), dtype=np.uint8)
  assert metrics.relevance(labels, labels).all()


# ---------------------------------------------------------------------------------------------
# Hand-computed cases: 1 query, 8-bit codes; database codes chosen for given distances.
# ---------------------------------------------------------------------------------------------

_POSITIVE = np.array([[1, 0]], dtype=np.uint8)  # Query label (class 0 of 2).
_NEGATIVE = np.array([0, 1], dtype=np.uint8)


def _codes_at_distances(distances: list[int]) -> tuple[np.ndarray, np.ndarray]:
  """Packed query (all bits 0) and database items with the first d bits set, [1, 1] / [N, 1]."""
  database_bits = np.array([[1] * d + [0] * (8 - d) for d in distances], dtype=np.uint8)
  return np.zeros((1, 1), dtype=np.uint8), np.packbits(database_bits, axis=1)


def _database_labels(relevant: list[bool]) -> np.ndarray:
  return np.stack([_POSITIVE[0] if r else _NEGATIVE for r in relevant])


def _evaluate_one(distances, relevant, **kwargs):
  query, database = _codes_at_distances(distances)
  kwargs.setdefault("precision_at", (1, 2, 3, 4))
  return metrics.evaluate(
    query, database, _POSITIVE, _database_labels(relevant), num_bits=8, **kwargs
  )


def test_hand_computed_ap_and_precision():
  # Distances 0, 1, 3, 5; relevant at ranks 1 and 3.
  #   AP = (P(1) + P(3)) / 2 = (1/1 + 2/3) / 2 = 5/6.
  #   AP@2: one relevant in the top 2, at rank 1 -> 1/1 = 1.
  #   AP@1 = 1; AP@3 = AP@4 = AP.
  #   precision@k: k=1 -> 1, k=2 -> 1/2, k=3 -> 2/3, k=4 -> 2/4.
  #   radius 2: items at distance 0, 1 retrieved, 1 relevant -> precision 1/2.
  result = _evaluate_one([0, 1, 3, 5], [True, False, True, False], map_at=(1, 2, 3, 4))
  assert result["map"] == pytest.approx(5 / 6)
  assert result["map_at"] == pytest.approx({"1": 1.0, "2": 1.0, "3": 5 / 6, "4": 5 / 6})
  assert result["precision_at_k"]["k"] == [1, 2, 3, 4]
  assert result["precision_at_k"]["precision"] == pytest.approx([1, 1 / 2, 2 / 3, 1 / 2])
  assert result["precision_radius2"] == pytest.approx(1 / 2)
  assert result["num_queries"] == 1 and result["num_database"] == 4
  assert result["constant_bits"] == 3  # the last 3 of the 8 bits are 0 in every database code
  # PR curve: retrieved within r = 1, 2, 2, 3, 3, 4, 4, 4, 4 items for r = 0..8.
  assert result["pr_curve"]["radius"] == list(range(9))
  assert result["pr_curve"]["precision"] == pytest.approx(
    [1, 1 / 2, 1 / 2, 2 / 3, 2 / 3, 1 / 2, 1 / 2, 1 / 2, 1 / 2]
  )
  assert result["pr_curve"]["recall"] == pytest.approx([1 / 2, 1 / 2, 1 / 2, 1, 1, 1, 1, 1, 1])


def test_ties_are_broken_by_database_index():
  # All four items at distance 3; only item 2 is relevant. Ranked by index, it is at rank 3:
  #   AP = P(3) = 1/3. (A tie-break favouring relevant items would give 1.)
  result = _evaluate_one([3, 3, 3, 3], [False, False, True, False], map_at=(2, 3))
  assert result["map"] == pytest.approx(1 / 3)
  # AP@2: no relevant item in the top 2 -> 0. AP@3 = P(3) / 1 = 1/3.
  assert result["map_at"] == pytest.approx({"2": 0.0, "3": 1 / 3})
  assert result["precision_at_k"]["precision"] == pytest.approx([0, 0, 1 / 3, 1 / 4])


def test_ties_by_index_with_relevant_item_first():
  # Item 0 (relevant) and item 1 tie at distance 1; item 0 wins on index: AP = 1.
  # Swapped relevance puts the relevant item at rank 2: AP = 1/2.
  assert _evaluate_one([1, 1], [True, False])["map"] == pytest.approx(1.0)
  assert _evaluate_one([1, 1], [False, True])["map"] == pytest.approx(0.5)


def test_query_without_relevant_items_contributes_zero():
  query, database = _codes_at_distances([0, 1, 2])
  database_labels = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.uint8)
  # Query 0 has label 0 (relevant at ranks 1 and 3: AP = (1 + 2/3) / 2 = 5/6);
  # query 1 has no label, so no relevant item: AP 0. mAP = (5/6 + 0) / 2 = 5/12.
  query_labels = np.array([[1, 0], [0, 0]], dtype=np.uint8)
  result = metrics.evaluate(
    np.repeat(query, 2, axis=0), database, query_labels, database_labels, num_bits=8, map_at=(3,)
  )
  assert result["map"] == pytest.approx(5 / 12)
  assert result["map_at"]["3"] == pytest.approx(5 / 12)
  # Recall is averaged over query 0 only; precision over both (both retrieve something).
  assert result["pr_curve"]["recall"][0] == pytest.approx(1 / 2)
  assert result["pr_curve"]["precision"][0] == pytest.approx((1 + 0) / 2)


def test_empty_radius_result_counts_as_zero_precision():
  # Nothing within radius 2 (distances 3 and 4): precision 0, not NaN and not skipped.
  result = _evaluate_one([3, 4], [True, True])
  assert result["precision_radius2"] == 0.0
  # No query retrieves anything at radii 0..2: PR precision there is 0.0 by convention.
  assert result["pr_curve"]["precision"][:3] == [0.0, 0.0, 0.0]
  assert result["pr_curve"]["precision"][3] == pytest.approx(1.0)
  json.dumps(result, allow_nan=False)


def test_radius_key_follows_radius_argument():
  result = _evaluate_one([0, 1, 3, 5], [True, False, True, False], radius=3)
  assert "precision_radius2" not in result
  assert result["precision_radius3"] == pytest.approx(2 / 3)


def test_k_larger_than_database_is_clipped():
  # precision@1000 with N = 4 is precision@4; AP@1000 is the whole-database AP.
  result = _evaluate_one([0, 1, 3, 5], [True, False, True, False], map_at=(1000,))
  assert result["precision_at_k"]["precision"][-1] == pytest.approx(1 / 2)
  assert result["map_at"]["1000"] == pytest.approx(result["map"])


# ---------------------------------------------------------------------------------------------
# Input validation.
# ---------------------------------------------------------------------------------------------


def _valid_inputs():
  query, database = _codes_at_distances([0, 1, 2])
  return query, database, _POSITIVE, _database_labels([True, False, True])


def test_hamming_distances_rejects_mismatched_widths():
  with pytest.raises(ValueError, match="widths"):
    metrics.hamming_distances(np.zeros((2, 1), np.uint8), np.zeros((3, 2), np.uint8))


def test_hamming_distances_rejects_unpacked_input():
  with pytest.raises(ValueError, match="uint8"):
    metrics.hamming_distances(np.zeros((2, 8), np.float32), np.zeros((3, 8), np.float32))


def test_evaluate_rejects_mismatched_widths():
  query, _, query_labels, database_labels = _valid_inputs()
  with pytest.raises(ValueError, match="widths"):
    metrics.evaluate(query, np.zeros((3, 2), np.uint8), query_labels, database_labels, num_bits=8)


@pytest.mark.parametrize("which", ["query", "database"])
def test_evaluate_rejects_label_row_mismatch(which):
  query, database, query_labels, database_labels = _valid_inputs()
  if which == "query":
    query_labels = np.repeat(query_labels, 2, axis=0)
  else:
    database_labels = database_labels[:2]
  with pytest.raises(ValueError, match=f"{which} labels have"):
    metrics.evaluate(query, database, query_labels, database_labels, num_bits=8)


def test_evaluate_rejects_label_class_mismatch():
  query, database, query_labels, database_labels = _valid_inputs()
  with pytest.raises(ValueError, match="classes"):
    metrics.evaluate(query, database, query_labels[:, :1], database_labels, num_bits=8)


def test_evaluate_rejects_too_many_bits():
  with pytest.raises(ValueError, match="num_bits=9"):
    metrics.evaluate(*_valid_inputs(), num_bits=9)


def test_evaluate_rejects_set_padding_bits():
  # Item 2 has its first 2 bits set, which lie past num_bits=1.
  with pytest.raises(ValueError, match="beyond num_bits"):
    metrics.evaluate(*_valid_inputs(), num_bits=1)


@pytest.mark.parametrize(
  "kwargs", [{"map_at": (0,)}, {"precision_at": (-1,)}, {"radius": -1}, {"query_chunk": 0}]
)
def test_evaluate_rejects_bad_arguments(kwargs):
  with pytest.raises(ValueError):
    metrics.evaluate(*_valid_inputs(), num_bits=8, **kwargs)
