"""Hamming retrieval engine: exact ranking, ranking metrics, k-NN and radius search.

Codes are packed bits, uint8 `[N, B]` from `np.packbits(code > 0, axis=1)` (as in codes.npz
and `metrics.pack_codes`). The engine views them as uint64 words `[N, ceil(B / 8)]`, so that a
Hamming distance is a few XORs and popcounts (np.bitwise_count in numpy, the popcount
instruction in the compiled kernels of `hashing.hamming_kernels`, `jax.lax.population_count`
under jit on an accelerator).

Ranking is ascending Hamming distance with ties broken by database index, everywhere. Distances
are integers 0..q, so nothing is sorted: every ranking comes from per-distance counts (see
`hamming_kernels`). Search:
  * `knn`: the k nearest items, one linear pass per query (no heap);
  * `HammingIndex.radius_search`: every item within radius r <= 2 through hash tables on the
    codes (multi-index hashing: one table per part of the code, Norouzi et al., CVPR 2012),
    falling back to the linear scan for queries whose table buckets are too full;
  * `faiss_knn` / `faiss_radius_search`: the same answers (ties aside) from faiss-cpu, an
    optional backend (`pip install -e .[faiss]`).
Work is split over query chunks run on a thread pool (the kernels release the GIL).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from hashing import hamming_kernels as kernels

MAX_TABLE_RADIUS = 2  # hash tables answer radius 0, 1 and 2; larger radii use the scan


# ----------------------------------------------------------------------------------------------
# Inputs.


def check_packed(name: str, packed: np.ndarray) -> np.ndarray:
  """`packed` as a uint8 `[rows, bytes]` array; ValueError otherwise."""
  packed = np.asarray(packed)
  if packed.dtype != np.uint8 or packed.ndim != 2:
    raise ValueError(
      f"{name} must be packed codes, a uint8 array [rows, bytes] from np.packbits(code > 0, "
      f"axis=1); got dtype {packed.dtype} and shape {packed.shape}"
    )
  return packed


def check_same_width(query_packed: np.ndarray, database_packed: np.ndarray) -> None:
  if query_packed.shape[1] != database_packed.shape[1]:
    raise ValueError(
      f"query and database codes have different widths: {query_packed.shape[1]} vs "
      f"{database_packed.shape[1]} bytes per code (were they packed from the same num_bits?)"
    )


def to_words(packed: np.ndarray, dtype: type = np.uint64) -> np.ndarray:
  """Views uint8 `[rows, B]` as `[rows, ceil(B / size)]` words of `dtype`, zero-padded.

  XOR and popcount do not care about zero padding nor about byte order within a word, and one
  uint64 operation replaces eight uint8 ones.
  """
  packed = np.asarray(packed, dtype=np.uint8)
  rows, width = packed.shape
  size = np.dtype(dtype).itemsize
  padded = np.zeros((rows, max(1, -(-width // size)) * size), dtype=np.uint8)
  padded[:, :width] = packed
  return padded.view(dtype)


def label_words(labels: np.ndarray) -> np.ndarray:
  """Multi-hot labels `[rows, L]` -> uint64 bit sets `[rows, ceil(L / 64)]`.

  Two rows share a label exactly when some word of their AND is non-zero.
  """
  return to_words(np.packbits(np.asarray(labels) > 0, axis=1))


def _check_num_bits(num_bits: int, width: int) -> int:
  num_bits = int(num_bits)
  if not 1 <= num_bits <= 8 * width:
    raise ValueError(
      f"num_bits={num_bits} does not fit packed codes of {width} bytes (need 1..{8 * width})"
    )
  return num_bits


def padding_mask(num_bits: int, width: int) -> np.ndarray:
  """uint8 `[width]`: the bits of packed codes past `num_bits`."""
  return np.packbits(np.arange(8 * width) >= num_bits)


def check_padding(num_bits: int, *packed: np.ndarray, mask: np.ndarray | None = None) -> None:
  """Rejects codes with bits set past `num_bits` (they would make distances exceed it)."""
  padding = padding_mask(num_bits, packed[0].shape[1]) if mask is None else mask
  for p in packed:
    if np.any(p & padding):
      raise ValueError(
        f"packed codes have bits set beyond num_bits={num_bits}; is num_bits the code length?"
      )


# ----------------------------------------------------------------------------------------------
# Threads.


def default_threads() -> int:
  """The CPUs this process may run on."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:  # not Linux
    return max(1, os.cpu_count() or 1)


@functools.lru_cache(maxsize=4)
def _pool(threads: int) -> ThreadPoolExecutor:
  # One long-lived pool per size: starting threads per call would cost more than a small call.
  return ThreadPoolExecutor(threads, thread_name_prefix="hashing-retrieval")


def _chunks(num_rows: int, threads: int, min_rows: int = 1) -> list[tuple[int, int]]:
  """[start, stop) row ranges: about 4 per thread (balances uneven work), >= min_rows each."""
  num_chunks = max(1, min(4 * threads, num_rows // max(1, min_rows)))
  bounds = np.linspace(0, num_rows, num_chunks + 1).round().astype(int)
  return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def _parallel(fn: Callable[[int, int], object], num_rows: int, threads: int | None) -> list:
  """`[fn(start, stop)]` over row chunks, on the thread pool when there is more than a row."""
  if num_rows <= 1:  # one query: no pool, no chunking (latency)
    return [fn(0, num_rows)] if num_rows else []
  threads = default_threads() if threads is None else int(threads)
  if threads < 1:
    raise ValueError(f"threads must be >= 1; got {threads}")
  chunks = _chunks(num_rows, threads)
  if threads == 1 or len(chunks) == 1:
    return [fn(a, b) for a, b in chunks]
  return list(_pool(threads).map(lambda ab: fn(*ab), chunks))


# ----------------------------------------------------------------------------------------------
# Distances.


def hamming_distances(
  query_packed: np.ndarray, database_packed: np.ndarray, *, backend: str = "numpy"
) -> np.ndarray:
  """`[Q, N]` distances `popcount(query[i] XOR database[j])` of packed codes.

  Args:
    query_packed, database_packed: uint8 `[Q, B]`, `[N, B]`.
    backend: "numpy" (np.bitwise_count over uint64 words, int32 result) or "jax"
      (`jax.lax.population_count` under jit, on the default JAX device; uint32 words, as JAX
      has no 64-bit integers by default).
  """
  query_packed = check_packed("query_packed", query_packed)
  database_packed = check_packed("database_packed", database_packed)
  check_same_width(query_packed, database_packed)
  if backend == "jax":
    return np.asarray(
      _jax_distances(to_words(query_packed, np.uint32), to_words(database_packed, np.uint32))
    )
  if backend != "numpy":
    raise ValueError(f"backend must be 'numpy' or 'jax'; got {backend!r}")
  query_words, database_words = to_words(query_packed), to_words(database_packed)
  dist = np.zeros((query_words.shape[0], database_words.shape[0]), dtype=np.int32)
  # A loop over the (few) words keeps peak memory at a couple of [Q, N] arrays.
  for w in range(query_words.shape[1]):
    dist += np.bitwise_count(query_words[:, w, None] ^ database_words[None, :, w])
  return dist


@functools.cache
def _jax_functions():
  import jax  # noqa: PLC0415 - only the accelerator path needs it here
  import jax.numpy as jnp  # noqa: PLC0415

  @jax.jit
  def distances(query_words, database_words):
    # [Q, N] int32; words are uint32.
    xor = query_words[:, None, :] ^ database_words[None, :, :]
    return jax.lax.population_count(xor).astype(jnp.int32).sum(axis=-1)

  @functools.partial(jax.jit, static_argnames=("num_dist", "map_at", "precision_at"))
  def stats(
    query_words, database_words, query_labels, database_labels, *, num_dist, map_at, precision_at
  ):
    # Traced under 64-bit mode (see _ranking_stats_jax): float64 precisions, int64 keys.
    dist = distances(query_words, database_words)  # [Q, N]
    rel = ((query_labels[:, None, :] & database_labels[None, :, :]) != 0).any(axis=-1)
    num_queries, num_database = dist.shape
    # Unique keys dist * N + index: an ordinary sort gives the (distance, index) order.
    keys = dist.astype(jnp.int64) * num_database + jnp.arange(num_database, dtype=jnp.int64)
    rel_sorted = jnp.take_along_axis(rel, jnp.argsort(keys, axis=1), axis=1)
    hits = jnp.cumsum(rel_sorted, axis=1, dtype=jnp.int64)
    ranks = jnp.arange(1, num_database + 1, dtype=jnp.float64)
    contrib = jnp.where(rel_sorted, hits / ranks, 0.0)  # P(r) rel(r)
    num_rel = hits[:, -1]
    ap = jnp.where(num_rel > 0, contrib.sum(axis=1) / jnp.maximum(num_rel, 1), 0.0)
    ap_at = jnp.zeros((num_queries, 0))
    if map_at:
      found = jnp.stack([hits[:, k - 1] for k in map_at], axis=1)
      sums = jnp.stack([contrib[:, :k].sum(axis=1) for k in map_at], axis=1)
      ap_at = jnp.where(found > 0, sums / jnp.maximum(found, 1), 0.0)
    hits_at = jnp.zeros((num_queries, 0), jnp.int64)
    if precision_at:
      hits_at = jnp.stack([hits[:, k - 1] for k in precision_at], axis=1)
    row = jnp.broadcast_to(jnp.arange(num_queries)[:, None], dist.shape)
    hist_all = jnp.zeros((num_queries, num_dist), jnp.int64).at[row, dist].add(1)
    hist_rel = jnp.zeros((num_queries, num_dist), jnp.int64).at[row, dist].add(rel)
    return ap, ap_at, hits_at, hist_all, hist_rel

  return distances, stats


def _jax_distances(query_words: np.ndarray, database_words: np.ndarray):
  return _jax_functions()[0](query_words, database_words)


# ----------------------------------------------------------------------------------------------
# Ranking and ranking metrics.


def ranking(
  query_packed: np.ndarray, database_packed: np.ndarray, *, threads: int | None = None
) -> np.ndarray:
  """The full ranking: int32 `[Q, N]`, database indices by (distance, index), by counting."""
  query_packed = check_packed("query_packed", query_packed)
  database_packed = check_packed("database_packed", database_packed)
  check_same_width(query_packed, database_packed)
  query_words, database_words = to_words(query_packed), to_words(database_packed)
  num_database = database_words.shape[0]
  if num_database >= 2**31:
    raise ValueError(f"at most 2**31 - 1 database codes; got {num_database}")
  order = np.empty((query_words.shape[0], num_database), np.int32)
  num_dist = 64 * database_words.shape[1] + 1
  _parallel(
    lambda a, b: kernels.full_ranking(query_words, database_words, a, b, num_dist, order),
    query_words.shape[0],
    threads,
  )
  return order


@dataclasses.dataclass(frozen=True)
class RankingStats:
  """Per-query results of the whole-database ranking (see `ranking_stats`).

  Attributes:
    ap: float64 `[Q]`, AP_i = (1 / R_i) sum_r P(r) rel(r) over all N ranks; 0 when R_i = 0.
    ap_at: float64 `[Q, len(map_at)]`, sum_{r<=k} P(r) rel(r) / sum_{r<=k} rel(r); 0 if none.
    hits_at: int64 `[Q, len(precision_at)]`, sum_{r<=k} rel(r).
    hist_all: int64 `[Q, num_bits + 1]`, number of database items at distance d.
    hist_rel: int64 `[Q, num_bits + 1]`, number of relevant items at distance d.
  """

  ap: np.ndarray
  ap_at: np.ndarray
  hits_at: np.ndarray
  hist_all: np.ndarray
  hist_rel: np.ndarray


def ranking_stats(
  query_packed: np.ndarray,
  database_packed: np.ndarray,
  query_labels: np.ndarray,
  database_labels: np.ndarray,
  *,
  num_bits: int,
  map_at: Sequence[int] = (),
  precision_at: Sequence[int] = (),
  threads: int | None = None,
  backend: str = "auto",
  query_chunk: int = 100,
) -> RankingStats:
  """AP, AP@k, hits@k and distance histograms of every query, exact, without sorting.

  P(r) = (relevant items in ranks 1..r) / r, ranks by (distance, index); an item is relevant
  when it shares a label with the query. Everything else (mAP, precision within a radius, the
  PR curve, precision@k) follows from these arrays; `metrics.evaluate` does that.

  Args:
    query_packed, database_packed: uint8 `[Q, B]`, `[N, B]` with no bit set past num_bits.
    query_labels, database_labels: multi-hot `[Q, L]`, `[N, L]`.
    num_bits: the code length q (histograms have q + 1 bins).
    map_at, precision_at: k values (>= 1), clipped to N.
    threads: CPU threads (default: every CPU of the process).
    backend: "cpu" (the compiled counting kernel, O(N) per query), "jax" (a jitted sort per
      query chunk, for an accelerator) or "auto" ("jax" when JAX's default device is a GPU or
      TPU, else "cpu").
    query_chunk: queries per jitted call of the "jax" backend (memory O(query_chunk * N * q)).
  """
  database_packed = check_packed("database_packed", database_packed)
  query_packed = check_packed("query_packed", query_packed)
  num_database = database_packed.shape[0]
  map_at_clipped = np.array([min(int(k), num_database) for k in map_at], dtype=np.int64)
  precision_at_clipped = np.array([min(int(k), num_database) for k in precision_at], np.int64)
  num_queries = query_packed.shape[0]
  num_dist = int(num_bits) + 1
  if backend == "auto":
    backend = "jax" if _jax_accelerator() else "cpu"
  if backend == "jax":
    return _ranking_stats_jax(
      query_packed,
      database_packed,
      query_labels,
      database_labels,
      num_dist,
      tuple(int(k) for k in map_at_clipped),
      tuple(int(k) for k in precision_at_clipped),
      query_chunk,
    )
  if backend != "cpu":
    raise ValueError(f"backend must be 'auto', 'cpu' or 'jax'; got {backend!r}")
  if num_database >= 2**31:
    raise ValueError(f"at most 2**31 - 1 database codes; got {num_database}")
  query_words, database_words = to_words(query_packed), to_words(database_packed)
  query_label_words, database_label_words = label_words(query_labels), label_words(database_labels)
  # The histogram must cover every distance the words can produce; bits past num_bits are
  # checked to be zero by the caller, so distances stay <= num_bits.
  ap = np.zeros(num_queries)
  ap_at = np.zeros((num_queries, len(map_at_clipped)))
  hits_at = np.zeros((num_queries, len(precision_at_clipped)), np.int64)
  hist_all = np.zeros((num_queries, num_dist), np.int64)
  hist_rel = np.zeros((num_queries, num_dist), np.int64)

  def work(start: int, stop: int) -> None:
    kernels.ranking_stats(
      query_words,
      database_words,
      query_label_words,
      database_label_words,
      start,
      stop,
      map_at_clipped,
      precision_at_clipped,
      ap,
      ap_at,
      hits_at,
      hist_all,
      hist_rel,
    )

  _parallel(work, num_queries, threads)
  return RankingStats(ap, ap_at, hits_at, hist_all, hist_rel)


def _jax_accelerator() -> bool:
  import jax  # noqa: PLC0415 - imported on demand: the engine itself does not need JAX

  return jax.default_backend() in ("gpu", "tpu", "cuda", "rocm")


def _ranking_stats_jax(
  query_packed: np.ndarray,
  database_packed: np.ndarray,
  query_labels: np.ndarray,
  database_labels: np.ndarray,
  num_dist: int,
  map_at: tuple[int, ...],
  precision_at: tuple[int, ...],
  query_chunk: int,
) -> RankingStats:
  import jax  # noqa: PLC0415

  stats = _jax_functions()[1]
  query_words = to_words(query_packed, np.uint32)
  database_words = to_words(database_packed, np.uint32)
  query_labels = to_words(np.packbits(np.asarray(query_labels) > 0, axis=1), np.uint32)
  database_labels = to_words(np.packbits(np.asarray(database_labels) > 0, axis=1), np.uint32)
  parts = []
  # 64-bit mode for this computation only: float64 keeps AP exact to the last bits, as on CPU.
  # (jax.enable_x64 is new; older JAX has it in jax.experimental.)
  enable_x64 = jax.enable_x64 if hasattr(jax, "enable_x64") else jax.experimental.enable_x64
  with enable_x64(True):
    for start in range(0, query_words.shape[0], query_chunk):
      stop = min(start + query_chunk, query_words.shape[0])
      out = stats(
        query_words[start:stop],
        database_words,
        query_labels[start:stop],
        database_labels,
        num_dist=num_dist,
        map_at=map_at,
        precision_at=precision_at,
      )
      parts.append([np.asarray(x) for x in out])
  ap, ap_at, hits_at, hist_all, hist_rel = (
    np.concatenate(arrays) for arrays in zip(*parts, strict=True)
  )
  return RankingStats(ap, ap_at, hits_at, hist_all, hist_rel)


# ----------------------------------------------------------------------------------------------
# k nearest neighbours.


def knn(
  query_packed: np.ndarray,
  database_packed: np.ndarray,
  k: int,
  *,
  threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """The k nearest database codes of each query by linear scan, ordered by (distance, index).

  Returns:
    (indices int64 `[Q, k']`, distances int32 `[Q, k']`), k' = min(k, N).
  """
  query_packed = check_packed("query_packed", query_packed)
  database_packed = check_packed("database_packed", database_packed)
  check_same_width(query_packed, database_packed)
  k = int(k)
  if k < 1:
    raise ValueError(f"k must be >= 1; got {k}")
  return _knn_words(to_words(query_packed), to_words(database_packed), k, threads)


def _knn_words(
  query_words: np.ndarray, database_words: np.ndarray, k: int, threads: int | None
) -> tuple[np.ndarray, np.ndarray]:
  k = min(k, database_words.shape[0])
  num_queries = query_words.shape[0]
  indices = np.zeros((num_queries, k), np.int64)
  distances = np.zeros((num_queries, k), np.int32)
  if k == 0 or num_queries == 0:
    return indices, distances
  num_dist = 64 * database_words.shape[1] + 1
  _parallel(
    lambda a, b: kernels.knn_scan(
      query_words, database_words, a, b, k, num_dist, indices, distances
    ),
    num_queries,
    threads,
  )
  return indices, distances


# ----------------------------------------------------------------------------------------------
# Radius search.


@dataclasses.dataclass(frozen=True)
class Neighbours:
  """Variable-length results of several queries, one after the other (CSR layout).

  Query i's results are `indices[offsets[i]:offsets[i + 1]]` (int64 database indices) and the
  same slice of `distances` (int32), ordered by (distance, index). `result[i]` gives the pair.
  """

  offsets: np.ndarray
  indices: np.ndarray
  distances: np.ndarray

  def __len__(self) -> int:
    return len(self.offsets) - 1

  def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = self.offsets[i], self.offsets[i + 1]
    return self.indices[a:b], self.distances[a:b]

  @staticmethod
  def from_parts(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Neighbours:
    counts = np.concatenate([np.zeros(1, np.int64)] + [p[0] for p in parts])
    return Neighbours(
      offsets=np.cumsum(counts),
      indices=np.concatenate([np.zeros(0, np.int64)] + [p[1] for p in parts]),
      distances=np.concatenate([np.zeros(0, np.int32)] + [p[2] for p in parts]),
    )


def radius_search_scan(
  query_packed: np.ndarray,
  database_packed: np.ndarray,
  radius: int,
  *,
  threads: int | None = None,
) -> Neighbours:
  """Every database code within Hamming distance `radius` of each query, by linear scan."""
  query_packed = check_packed("query_packed", query_packed)
  database_packed = check_packed("database_packed", database_packed)
  check_same_width(query_packed, database_packed)
  radius = _check_radius(radius)
  query_words, database_words = to_words(query_packed), to_words(database_packed)
  radius = min(radius, 64 * database_words.shape[1])
  parts = _parallel(
    lambda a, b: kernels.radius_scan(query_words, database_words, a, b, radius),
    query_words.shape[0],
    threads,
  )
  return Neighbours.from_parts(parts)


def _check_radius(radius: int) -> int:
  radius = int(radius)
  if radius < 0:
    raise ValueError(f"radius must be >= 0; got {radius}")
  return radius


def _bit_positions(num_bits: int, num_words: int) -> list[list[int]]:
  """For each uint64 word, the bit positions (0 = least significant) of code bits 0..q-1.

  Found by packing one-hot codes, so that it holds for any byte order.
  """
  width = 8 * num_words
  one_hot = np.zeros((num_bits, width), np.uint8)
  one_hot[:, : -(-num_bits // 8)] = np.packbits(np.eye(num_bits, dtype=bool), axis=1)
  words = to_words(one_hot)
  positions = [[] for _ in range(num_words)]
  for row in words:
    (w,) = np.flatnonzero(row)
    positions[w].append(int(row[w]).bit_length() - 1)
  return positions


def default_num_parts(num_bits: int, num_database: int) -> int:
  """Parts of multi-index hashing: about q / log2(N) (Norouzi et al.), at least 1.

  Parts of ~log2(N) bits hold about one item per key for spread-out codes, so probes find few
  false candidates, while short codes keep one table of whole codes.
  """
  return max(1, round(num_bits / max(1.0, math.log2(max(2, num_database)))))


@dataclasses.dataclass(frozen=True)
class _Tables:
  """Multi-index hash tables over code parts (arguments of the kernels, see table_search)."""

  part_word: np.ndarray
  part_bits: np.ndarray
  part_len: np.ndarray
  arrays: tuple  # (slots, slot_start, table_bits, keys, starts, ends, members)

  @property
  def num_parts(self) -> int:
    return len(self.part_word)

  @property
  def nbytes(self) -> int:
    return sum(a.nbytes for a in self.arrays)


def _build_tables(words: np.ndarray, num_bits: int, num_parts: int) -> _Tables:
  num_words = words.shape[1]
  positions = _bit_positions(num_bits, num_words)
  # Parts never straddle words (a part's key is one word AND a mask); each word gets parts in
  # proportion to its bits, at least one.
  part_word, part_bits = [], []
  for w, pos in enumerate(positions):
    if not pos:
      continue
    share = max(1, round(num_parts * len(pos) / num_bits))
    for chunk in np.array_split(np.array(pos), min(share, len(pos))):
      part_word.append(w)
      part_bits.append(chunk.tolist())
  width = max(len(b) for b in part_bits)
  bits_array = np.zeros((len(part_bits), width), np.int64)
  for m, b in enumerate(part_bits):
    bits_array[m, : len(b)] = b
  num_database = words.shape[0]
  slots, slot_start, table_bits, keys, starts, ends, members = [], [], [], [], [], [], []
  num_slots = num_ids = 0
  for m, w in enumerate(part_word):
    mask = np.uint64(sum(1 << b for b in part_bits[m]))
    part = words[:, w] & mask
    order = np.argsort(part, kind="stable")  # stable: members of a key in index order
    sorted_part = part[order]
    first = np.flatnonzero(np.concatenate([[True], sorted_part[1:] != sorted_part[:-1]]))
    unique = sorted_part[first]
    bits_m = max(4, int(np.ceil(np.log2(2 * len(unique)))))
    slots.append(kernels.build_hash_table(unique, bits_m, num_ids))
    slot_start.append(num_slots)
    table_bits.append(bits_m)
    keys.append(unique)
    starts.append(first + m * num_database)
    ends.append(np.append(first[1:], num_database) + m * num_database)
    members.append(order.astype(np.int32))
    num_slots += 1 << bits_m
    num_ids += len(unique)
  arrays = (
    np.concatenate(slots),
    np.array(slot_start, np.int64),
    np.array(table_bits, np.int64),
    np.concatenate(keys),
    np.concatenate(starts).astype(np.int64),
    np.concatenate(ends).astype(np.int64),
    np.concatenate(members),
  )
  return _Tables(
    np.array(part_word, np.int64), bits_array, np.array([len(b) for b in part_bits]), arrays
  )


class HammingIndex:
  """Packed database codes with exact k-NN and radius search (see the module docstring).

  Memory: the codes as uint64 words, 8 * ceil(q / 64) bytes per code (8 MB for a million
  codes of up to 64 bits); the hash tables of `radius_search` add about 4 bytes per code and
  part plus ~40 bytes per distinct part value, built on the first table search.
  """

  def __init__(
    self,
    database_packed: np.ndarray,
    num_bits: int,
    *,
    num_parts: int | None = None,
    threads: int | None = None,
    scan_fraction: float = 0.05,
  ):
    """
    Args:
      database_packed: uint8 `[N, B]` packed codes.
      num_bits: code length q.
      num_parts: parts of multi-index hashing (default `default_num_parts`).
      threads: CPU threads (default: all of the process).
      scan_fraction: a query whose table buckets hold more than this fraction of N entries
        uses the linear scan instead (clustered codes can make buckets huge).
    """
    database_packed = check_packed("database_packed", database_packed)
    self.num_bits = _check_num_bits(num_bits, database_packed.shape[1])
    check_padding(self.num_bits, database_packed)
    self.width = database_packed.shape[1]
    self._padding = padding_mask(self.num_bits, self.width)
    self.words = to_words(database_packed)
    self.threads = threads
    self.scan_fraction = float(scan_fraction)
    self._num_parts = num_parts or default_num_parts(self.num_bits, len(self.words))
    self._tables: _Tables | None = None

  def __len__(self) -> int:
    return self.words.shape[0]

  @property
  def nbytes(self) -> int:
    """Bytes held for the codes (without the hash tables)."""
    return self.words.nbytes

  @property
  def num_parts(self) -> int:
    """Parts (hash tables) of multi-index hashing; 1 = one table of whole codes."""
    return self._num_parts if self._tables is None else self._tables.num_parts

  @property
  def tables_nbytes(self) -> int:
    return 0 if self._tables is None else self._tables.nbytes

  def build_tables(self) -> None:
    """Builds the hash tables now (else on the first table search)."""
    if self._tables is None:
      self._tables = _build_tables(self.words, self.num_bits, self._num_parts)

  def _queries(self, query_packed: np.ndarray) -> np.ndarray:
    query_packed = check_packed("query_packed", query_packed)
    if query_packed.shape[1] != self.width:
      raise ValueError(
        f"queries have {query_packed.shape[1]} bytes per code, the index {self.width} "
        f"({self.num_bits} bits)"
      )
    check_padding(self.num_bits, query_packed, mask=self._padding)
    return to_words(query_packed)

  def knn(
    self, query_packed: np.ndarray, k: int, *, method: str = "scan"
  ) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest codes by (distance, index): (indices int64 `[Q, k']`, distances int32).

    Args:
      query_packed: uint8 `[Q, B]`.
      k: >= 1; k' = min(k, N).
      method: "scan" (one linear pass per query, `knn`) or "table": the radius-2 ball from
        the hash tables (`radius_search`, method "auto"), exact whenever it holds >= k' items
        (every item outside is farther than all inside); the other queries fall back to the
        scan. "table" pays off when codes cluster, so that most balls are full.
    """
    query_words = self._queries(query_packed)
    k = int(k)
    if k < 1:
      raise ValueError(f"k must be >= 1; got {k}")
    if method == "scan":
      return _knn_words(query_words, self.words, k, self.threads)
    if method != "table":
      raise ValueError(f"method must be 'scan' or 'table'; got {method!r}")
    k = min(k, len(self))
    balls = self.radius_search(query_packed, MAX_TABLE_RADIUS)
    indices = np.zeros((len(query_words), k), np.int64)
    distances = np.zeros((len(query_words), k), np.int32)
    full = np.diff(balls.offsets) >= k
    for i in np.flatnonzero(full):
      indices[i], distances[i] = (a[:k] for a in balls[i])
    rest = np.flatnonzero(~full)
    if len(rest):
      indices[rest], distances[rest] = _knn_words(
        np.ascontiguousarray(query_words[rest]), self.words, k, self.threads
      )
    return indices, distances

  def radius_search(
    self, query_packed: np.ndarray, radius: int, *, method: str = "auto"
  ) -> Neighbours:
    """Every code within Hamming distance `radius`, by (distance, index).

    Args:
      query_packed: uint8 `[Q, B]`.
      radius: r >= 0.
      method: "table" (hash tables, r <= 2), "scan" (linear scan), or "auto": the tables for
        r <= 2, except for queries whose buckets hold more than `scan_fraction * N` entries,
        which are scanned; the scan for r > 2.
    """
    query_words = self._queries(query_packed)
    radius = _check_radius(radius)
    if method not in ("auto", "table", "scan"):
      raise ValueError(f"method must be 'auto', 'table' or 'scan'; got {method!r}")
    if method == "table" and radius > MAX_TABLE_RADIUS:
      raise ValueError(f"the hash tables answer radius <= {MAX_TABLE_RADIUS}; got {radius}")
    num_queries = query_words.shape[0]
    if method == "scan" or radius > MAX_TABLE_RADIUS or num_queries == 0:
      return self._scan(query_words, radius, np.arange(num_queries))
    self.build_tables()
    tables = self._tables
    part_radius = radius // tables.num_parts
    rows = np.arange(num_queries)
    if method == "auto":
      candidates = np.concatenate(
        _parallel(
          lambda a, b: kernels.table_candidates(
            query_words,
            a,
            b,
            tables.part_word,
            tables.part_bits,
            tables.part_len,
            part_radius,
            tables.arrays,
          ),
          num_queries,
          self.threads,
        )
      )
      use_scan = candidates > self.scan_fraction * len(self)
      if use_scan.any():
        table_rows = np.flatnonzero(~use_scan)
        merged = [None] * num_queries
        for rows_part, result in (
          (table_rows, self._table(query_words, radius, part_radius, table_rows)),
          (np.flatnonzero(use_scan), self._scan(query_words, radius, np.flatnonzero(use_scan))),
        ):
          for t, i in enumerate(rows_part):
            merged[i] = result[t]
        return Neighbours.from_parts(
          [(np.array([len(ix)], np.int64), ix, dist) for ix, dist in merged]
        )
    return self._table(query_words, radius, part_radius, rows)

  def _table(
    self, query_words: np.ndarray, radius: int, part_radius: int, rows: np.ndarray
  ) -> Neighbours:
    tables = self._tables
    return Neighbours.from_parts(
      _parallel(
        lambda a, b: kernels.table_search(
          query_words,
          self.words,
          rows[a:b].astype(np.int64),
          radius,
          tables.part_word,
          tables.part_bits,
          tables.part_len,
          part_radius,
          tables.arrays,
        ),
        len(rows),
        self.threads,
      )
    )

  def _scan(self, query_words: np.ndarray, radius: int, rows: np.ndarray) -> Neighbours:
    selected = np.ascontiguousarray(query_words[rows])
    radius = min(radius, self.num_bits)
    return Neighbours.from_parts(
      _parallel(
        lambda a, b: kernels.radius_scan(selected, self.words, a, b, radius),
        len(rows),
        self.threads,
      )
    )


# ----------------------------------------------------------------------------------------------
# Optional backend: faiss-cpu.


def faiss_available() -> bool:
  try:
    import faiss  # noqa: F401, PLC0415
  except ImportError:
    return False
  return True


def _faiss():
  try:
    import faiss  # noqa: PLC0415 - optional dependency
  except ImportError as e:
    raise ImportError(
      "the faiss backend needs faiss-cpu: pip install -e .[faiss] (or pip install faiss-cpu)"
    ) from e
  return faiss


def faiss_index(database_packed: np.ndarray, num_bits: int, *, kind: str = "flat"):
  """A faiss binary index holding the codes: "flat" = IndexBinaryFlat, "hash" = IndexBinaryHash.

  faiss needs whole bytes: num_bits must be a multiple of 8 (the codes' own width).
  """
  faiss = _faiss()
  database_packed = check_packed("database_packed", database_packed)
  if num_bits != 8 * database_packed.shape[1]:
    raise ValueError(f"faiss binary indexes need num_bits = 8 * bytes; got {num_bits}")
  if kind == "flat":
    index = faiss.IndexBinaryFlat(num_bits)
  elif kind == "hash":
    # The hash key is the first min(q, 24) bits; nflip=2 probes every key within 2 flips, so a
    # radius <= 2 search is exact.
    index = faiss.IndexBinaryHash(num_bits, min(num_bits, 24))
    index.nflip = MAX_TABLE_RADIUS
  else:
    raise ValueError(f"kind must be 'flat' or 'hash'; got {kind!r}")
  index.add(np.ascontiguousarray(database_packed))
  return index


def faiss_knn(index, query_packed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """(indices int64 `[Q, k]`, distances int32 `[Q, k]`) from a faiss binary index.

  Same distances as `knn`; among equal distances faiss may order indices differently.
  """
  distances, indices = index.search(np.ascontiguousarray(check_packed("query", query_packed)), k)
  return indices.astype(np.int64), distances.astype(np.int32)


def faiss_radius_search(index, query_packed: np.ndarray, radius: int) -> Neighbours:
  """`Neighbours` within `radius` from a faiss binary index, reordered by (distance, index).

  faiss's range search keeps distances < its threshold, hence radius + 1.
  """
  lims, distances, indices = index.range_search(
    np.ascontiguousarray(check_packed("query", query_packed)), int(radius) + 1
  )
  parts = []
  for i in range(len(lims) - 1):
    ix, dist = indices[lims[i] : lims[i + 1]], distances[lims[i] : lims[i + 1]]
    order = np.lexsort((ix, dist))
    parts.append((np.array([len(ix)], np.int64), ix[order].astype(np.int64), dist[order]))
  return Neighbours.from_parts(parts)
