"""Tests of hashing.retrieval (ranking, ranking metrics, k-NN, radius search) against plain
references computed from unpacked bits with Python sorting."""

from __future__ import annotations

import numpy as np
import pytest

from hashing import retrieval

# ---------------------------------------------------------------------------------------------
# References: unpacked 0/1 bits, numpy sums and Python's sort, by definition.
# ---------------------------------------------------------------------------------------------


def _ref_distances(query_bits: np.ndarray, database_bits: np.ndarray) -> np.ndarray:
  return (query_bits[:, None, :] != database_bits[None, :, :]).sum(axis=2)


def _ref_ranking(dist_row: np.ndarray) -> list[int]:
  return sorted(range(len(dist_row)), key=lambda j: (dist_row[j], j))


def _clustered_bits(rng, rows: int, num_bits: int, prototypes: np.ndarray, flip: float):
  """Noisy copies of a few prototypes: many exact ties and non-empty small balls."""
  bits = prototypes[rng.integers(0, len(prototypes), rows)]
  return bits ^ (rng.random((rows, num_bits)) < flip)


def _case(seed: int, num_bits: int, num_queries: int = 12, num_database: int = 400):
  rng = np.random.default_rng(seed)
  prototypes = rng.random((6, num_bits)) < 0.5
  database_bits = _clustered_bits(rng, num_database, num_bits, prototypes, 2 / num_bits)
  query_bits = _clustered_bits(rng, num_queries, num_bits, prototypes, 1.5 / num_bits)
  query_bits[0] = database_bits[7]  # an exact duplicate: distance 0 and ties at 0
  return query_bits, database_bits


def _pack(bits: np.ndarray) -> np.ndarray:
  return np.packbits(bits, axis=1)


# ---------------------------------------------------------------------------------------------
# Distances and ranking.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_bits", [7, 48, 64, 100])
def test_hamming_distances_numpy_and_jax_match_reference(num_bits):
  query_bits, database_bits = _case(0, num_bits, num_database=50)
  expected = _ref_distances(query_bits, database_bits)
  for backend in ("numpy", "jax"):
    got = retrieval.hamming_distances(_pack(query_bits), _pack(database_bits), backend=backend)
    np.testing.assert_array_equal(got, expected, err_msg=backend)


@pytest.mark.parametrize("num_bits", [16, 48, 100])
def test_ranking_is_distance_then_index(num_bits):
  query_bits, database_bits = _case(1, num_bits)
  order = retrieval.ranking(_pack(query_bits), _pack(database_bits), threads=2)
  dist = _ref_distances(query_bits, database_bits)
  assert order.shape == (len(query_bits), len(database_bits))
  for i in range(len(query_bits)):
    assert order[i].tolist() == _ref_ranking(dist[i])


# ---------------------------------------------------------------------------------------------
# Ranking metrics (AP by counting) against a sorted reference.
# ---------------------------------------------------------------------------------------------


def _ref_ranking_stats(query_bits, database_bits, query_labels, database_labels, ks):
  """AP, AP@k and hits@k per query by sorting and walking the ranking."""
  dist = _ref_distances(query_bits, database_bits)
  rel = (query_labels[:, None, :] & database_labels[None, :, :]).any(axis=2)
  ap, ap_at, hits_at = [], [], []
  for i in range(len(query_bits)):
    ranked = [bool(rel[i, j]) for j in _ref_ranking(dist[i])]
    hits, precisions = 0, []
    for r, is_rel in enumerate(ranked, start=1):
      if is_rel:
        hits += 1
        precisions.append((hits / r, r))
    ap.append(sum(p for p, _ in precisions) / len(precisions) if precisions else 0.0)
    row_ap, row_hits = [], []
    for k in ks:
      top = [p for p, r in precisions if r <= min(k, len(ranked))]
      row_ap.append(sum(top) / len(top) if top else 0.0)
      row_hits.append(sum(ranked[: min(k, len(ranked))]))
    ap_at.append(row_ap)
    hits_at.append(row_hits)
  return np.array(ap), np.array(ap_at), np.array(hits_at), dist, rel


@pytest.mark.parametrize("backend", ["cpu", "jax"])
@pytest.mark.parametrize(
  "num_bits,num_labels",
  [(12, 4), (48, 10), (100, 3), (24, 70)],  # one- and two-word codes and label sets
)
def test_ranking_stats_match_sorted_reference(backend, num_bits, num_labels):
  rng = np.random.default_rng(num_bits)
  query_bits, database_bits = _case(2, num_bits, num_queries=15, num_database=300)
  query_labels = rng.random((15, num_labels)) < 0.3  # multi-label, some rows empty
  database_labels = rng.random((300, num_labels)) < 0.3
  ks = (1, 5, 40, 1000)
  stats = retrieval.ranking_stats(
    _pack(query_bits),
    _pack(database_bits),
    query_labels.astype(np.uint8),
    database_labels.astype(np.uint8),
    num_bits=num_bits,
    map_at=ks,
    precision_at=ks,
    threads=3,
    backend=backend,
    query_chunk=4,
  )
  ap, ap_at, hits_at, dist, rel = _ref_ranking_stats(
    query_bits, database_bits, query_labels, database_labels, ks
  )
  np.testing.assert_allclose(stats.ap, ap, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(stats.ap_at, ap_at, rtol=1e-12, atol=1e-15)
  np.testing.assert_array_equal(stats.hits_at, hits_at)
  for d in range(num_bits + 1):
    np.testing.assert_array_equal(stats.hist_all[:, d], (dist == d).sum(axis=1))
    np.testing.assert_array_equal(stats.hist_rel[:, d], ((dist == d) & rel).sum(axis=1))


def test_ranking_stats_hand_made_case():
  # Query 0000 against 0001 (rel), 0000 (not rel), 0000 (rel), 0011 (rel): distances 1, 0, 0, 2.
  # Ranking by (distance, index): item 1, item 2, item 0, item 3 -> rel 0, 1, 1, 1, so
  # AP = (1/2 + 2/3 + 3/4) / 3 and AP@2 = (1/2) / 1.
  database = np.array([[0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1]], bool)
  labels = np.array([[1, 0], [0, 1], [1, 1], [1, 0]], np.uint8)
  stats = retrieval.ranking_stats(
    _pack(np.zeros((1, 4), bool)),
    _pack(database),
    np.array([[1, 0]], np.uint8),
    labels,
    num_bits=4,
    map_at=(2,),
    precision_at=(1, 3),
  )
  assert stats.ap[0] == pytest.approx((1 / 2 + 2 / 3 + 3 / 4) / 3, rel=1e-15)
  assert stats.ap_at[0, 0] == pytest.approx(1 / 2, rel=1e-15)
  assert stats.hits_at[0].tolist() == [0, 2]
  assert stats.hist_all[0].tolist() == [2, 1, 1, 0, 0]
  assert stats.hist_rel[0].tolist() == [1, 1, 1, 0, 0]


# ---------------------------------------------------------------------------------------------
# k nearest neighbours.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_bits", [16, 48, 64, 100])
@pytest.mark.parametrize("k", [1, 7, 50, 400, 1000])
def test_knn_matches_reference_with_ties_by_index(num_bits, k):
  query_bits, database_bits = _case(3, num_bits)
  indices, distances = retrieval.knn(_pack(query_bits), _pack(database_bits), k, threads=2)
  dist = _ref_distances(query_bits, database_bits)
  kk = min(k, len(database_bits))
  assert indices.shape == distances.shape == (len(query_bits), kk)
  for i in range(len(query_bits)):
    expected = _ref_ranking(dist[i])[:kk]
    assert indices[i].tolist() == expected
    assert distances[i].tolist() == dist[i, expected].tolist()


def test_knn_when_later_items_keep_getting_closer():
  # Worst case for the one-pass selection: every item is closer than all before it, so the
  # candidate buffer fills up and must be compacted many times.
  num_bits, n = 64, 5000
  rng = np.random.default_rng(4)
  query = np.zeros((1, num_bits), bool)
  database = np.zeros((n, num_bits), bool)
  for j in range(n):
    database[j, rng.choice(num_bits, 64 - (64 * j) // n, replace=False)] = True
  indices, distances = retrieval.knn(_pack(query), _pack(database), 300)
  dist = _ref_distances(query, database)[0]
  assert indices[0].tolist() == _ref_ranking(dist)[:300]
  assert distances[0].tolist() == sorted(dist)[:300]


@pytest.mark.parametrize("num_bits", [48, 100])
@pytest.mark.parametrize("tie_distance", [0, 3])
def test_knn_with_thousands_of_ties_at_the_kth_distance(num_bits, tie_distance):
  # Trained codes collapse: thousands of database items share the query's code (or sit at
  # one distance from it), far more than the candidate buffer (1,024 for k = 10) holds. The
  # scan used to keep admitting such ties and wrote past its buffer (heap corruption).
  rng = np.random.default_rng(5)
  query = rng.random((2, num_bits)) < 0.5
  database = np.repeat(query[:1], 6000, axis=0)
  flip = rng.permuted(np.tile(np.arange(num_bits) < tie_distance, (6000, 1)), axis=1)
  database ^= flip  # every item at exactly tie_distance from query 0
  closer = rng.choice(6000, 4, replace=False)
  database[closer] = query[0]  # a few at distance 0, scattered in index order
  indices, distances = retrieval.knn(_pack(query), _pack(database), 10, threads=2)
  dist = _ref_distances(query, database)
  for i in range(2):
    expected = _ref_ranking(dist[i])[:10]
    assert indices[i].tolist() == expected
    assert distances[i].tolist() == dist[i, expected].tolist()


def test_index_knn_through_tables_equals_scan():
  query_bits, database_bits = _case(5, 32, num_queries=20, num_database=2000)
  index = retrieval.HammingIndex(_pack(database_bits), 32, threads=2)
  for k in (1, 10, 300):
    by_table = index.knn(_pack(query_bits), k, method="table")
    by_scan = index.knn(_pack(query_bits), k, method="scan")
    np.testing.assert_array_equal(by_table[0], by_scan[0])
    np.testing.assert_array_equal(by_table[1], by_scan[1])


# ---------------------------------------------------------------------------------------------
# Radius search: hash tables (multi-index hashing) vs linear scan vs reference.
# ---------------------------------------------------------------------------------------------


def _ref_ball(dist_row: np.ndarray, radius: int) -> list[int]:
  return [j for j in _ref_ranking(dist_row) if dist_row[j] <= radius]


@pytest.mark.parametrize("num_bits", [16, 32, 48, 64, 100])
@pytest.mark.parametrize("num_parts", [None, 1, 2, 3, 5])
def test_radius_search_tables_and_scan_match_reference(num_bits, num_parts):
  query_bits, database_bits = _case(6, num_bits, num_queries=10, num_database=600)
  index = retrieval.HammingIndex(_pack(database_bits), num_bits, num_parts=num_parts, threads=2)
  dist = _ref_distances(query_bits, database_bits)
  nonempty = 0
  for radius in (0, 1, 2, 3):
    methods = ("table", "scan", "auto") if radius <= 2 else ("scan", "auto")
    for method in methods:
      result = index.radius_search(_pack(query_bits), radius, method=method)
      assert len(result) == len(query_bits)
      for i in range(len(query_bits)):
        got_indices, got_dist = result[i]
        expected = _ref_ball(dist[i], radius)
        assert got_indices.tolist() == expected, (radius, method, i)
        assert got_dist.tolist() == dist[i, expected].tolist()
        nonempty += len(expected) > 1
  assert nonempty > 0  # the data exercise real balls, not only empty ones


def test_multi_index_hashing_uses_several_tables_for_long_codes():
  _, database_bits = _case(7, 64, num_database=100_000 // 50)
  index = retrieval.HammingIndex(_pack(database_bits), 64)
  index.build_tables()
  assert index.num_parts == retrieval.default_num_parts(64, len(database_bits)) > 1
  assert index.tables_nbytes > 0
  assert retrieval.default_num_parts(16, 1_000_000) == 1  # short codes: one whole-code table
  assert retrieval.default_num_parts(64, 1_000_000) == 3


def test_auto_falls_back_to_the_scan_for_full_buckets():
  # Every database code is identical: each table bucket holds all N items, so "auto" scans;
  # with a generous scan_fraction it uses the tables. Both must give the same exact answer.
  database = np.zeros((300, 48), bool)
  database[::3, 5] = True  # two codes, at distance 1
  query = np.zeros((2, 48), bool)
  query[1, :3] = True  # distance 3 and 4: outside radius 2
  expected = [list(range(300)), []]
  expected[0] = [j for j in range(300) if j % 3] + list(range(0, 300, 3))
  for fraction in (0.0, 1.0, 1e9):
    index = retrieval.HammingIndex(_pack(database), 48, scan_fraction=fraction)
    result = index.radius_search(_pack(query), 2)
    assert [result[i][0].tolist() for i in range(2)] == expected


def test_neighbours_layout():
  result = retrieval.Neighbours.from_parts(
    [
      (np.array([2, 0]), np.array([4, 1]), np.array([0, 1], np.int32)),
      (np.array([1]), np.array([9]), np.array([2], np.int32)),
    ]
  )
  assert len(result) == 3
  assert result.offsets.tolist() == [0, 2, 2, 3]
  assert [result[i][0].tolist() for i in range(3)] == [[4, 1], [], [9]]
  assert result[2][1].tolist() == [2]


def test_index_memory_is_eight_bytes_per_code_up_to_64_bits():
  index = retrieval.HammingIndex(np.zeros((1000, 6), np.uint8), 48)
  assert index.nbytes == 8 * 1000
  assert index.tables_nbytes == 0  # tables are only built when needed


# ---------------------------------------------------------------------------------------------
# Input checks.
# ---------------------------------------------------------------------------------------------


def test_rejects_bad_inputs():
  codes = np.zeros((3, 2), np.uint8)
  with pytest.raises(ValueError, match="uint8"):
    retrieval.knn(codes.astype(np.int32), codes, 1)
  with pytest.raises(ValueError, match="different widths"):
    retrieval.knn(codes, np.zeros((3, 3), np.uint8), 1)
  with pytest.raises(ValueError, match="k must be"):
    retrieval.knn(codes, codes, 0)
  with pytest.raises(ValueError, match="beyond num_bits"):
    retrieval.HammingIndex(np.full((3, 2), 255, np.uint8), 12)
  index = retrieval.HammingIndex(codes, 16)
  with pytest.raises(ValueError, match="radius must be"):
    index.radius_search(codes, -1)
  with pytest.raises(ValueError, match="radius <= 2"):
    index.radius_search(codes, 3, method="table")
  with pytest.raises(ValueError, match="bytes per code"):
    index.knn(np.zeros((1, 3), np.uint8), 1)


# ---------------------------------------------------------------------------------------------
# Optional faiss backend.
# ---------------------------------------------------------------------------------------------


def test_faiss_gives_the_same_neighbours_ties_aside():
  pytest.importorskip("faiss")
  query_bits, database_bits = _case(8, 48, num_queries=20, num_database=3000)
  queries, database = _pack(query_bits), _pack(database_bits)
  k = 25
  indices, distances = retrieval.knn(queries, database, k)
  faiss_indices, faiss_distances = retrieval.faiss_knn(
    retrieval.faiss_index(database, 48, kind="flat"), queries, k
  )
  np.testing.assert_array_equal(faiss_distances, distances)
  for i in range(len(queries)):
    # Items strictly closer than the k-th distance are the same set; at the k-th distance
    # faiss may pick other tied items.
    closer = distances[i] < distances[i, -1]
    assert set(faiss_indices[i][closer]) == set(indices[i][closer])
  index = retrieval.HammingIndex(database, 48)
  for radius in (0, 1, 2):
    ours = index.radius_search(queries, radius)
    theirs = retrieval.faiss_radius_search(
      retrieval.faiss_index(database, 48, kind="hash"), queries, radius
    )
    np.testing.assert_array_equal(theirs.offsets, ours.offsets)
    np.testing.assert_array_equal(theirs.indices, ours.indices)
    np.testing.assert_array_equal(theirs.distances, ours.distances)


def test_faiss_missing_gives_an_install_hint(monkeypatch):
  import builtins

  real_import = builtins.__import__

  def no_faiss(name, *args, **kwargs):
    if name == "faiss":
      raise ImportError("no faiss")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_faiss)
  assert not retrieval.faiss_available()
  with pytest.raises(ImportError, match="pip install"):
    retrieval.faiss_index(np.zeros((2, 6), np.uint8), 48)
