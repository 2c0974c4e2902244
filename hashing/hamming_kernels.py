"""Compiled (numba) loops of the Hamming retrieval engine; `hashing.retrieval` is the API.

Codes and label sets enter as uint64 words `[rows, words]` (see `retrieval.to_words`): the
Hamming distance of two codes is `sum_w popcount(a[w] ^ b[w])`, and two label sets overlap when
`any_w (a[w] & b[w]) != 0`. Every kernel works on the query rows `[start, stop)` and releases
the GIL, so that `retrieval` can run query chunks on a thread pool. A fast path handles one word
of codes and one word of labels (codes of up to 64 bits, up to 64 classes), the common case.

Ranking is ascending distance with ties broken by database index. Distances are integers
0..q, so the engine never sorts: it counts. For query i let n(d) be the number of database
items at distance d; then the item j at distance d has rank
  rank(j) = sum_{e < d} n(e) + #{k < j : dist(k) = d} + 1,
which one pass over the database in index order gives, with one running count per distance.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

# cache=True keeps the compiled machine code in __pycache__ between processes (compiling every
# kernel takes seconds); nogil=True lets threads run kernels in parallel.
_JIT = dict(nogil=True, cache=True)


@intrinsic
def popcount(typingctx, x):
  """Number of set bits of a uint64, as the CPU's popcount instruction (LLVM ctpop)."""
  if not isinstance(x, types.Integer):
    return None

  def codegen(context, builder, signature, args):
    return builder.ctpop(args[0])

  return types.uint64(types.uint64), codegen


@numba.njit(inline="always")
def _distance(query_words, i, database_words, j):
  # Sum in uint64, return int64: numba types int64 + uint64 as float64.
  d = np.uint64(0)
  for w in range(database_words.shape[1]):
    d += popcount(query_words[i, w] ^ database_words[j, w])
  return np.int64(d)


@numba.njit(inline="always")
def _overlap(query_labels, i, database_labels, j):
  for w in range(database_labels.shape[1]):
    if query_labels[i, w] & database_labels[j, w]:
      return True
  return False


# ----------------------------------------------------------------------------------------------
# Whole-database ranking metrics.


@numba.njit(**_JIT)
def ranking_stats(
  query_words,
  database_words,
  query_labels,
  database_labels,
  start,
  stop,
  map_at,
  precision_at,
  ap,
  ap_at,
  hits_at,
  hist_all,
  hist_rel,
):
  """Per-query AP, AP@k and relevant counts in the top k, without a sort.

  One pass over the database in index order keeps, per distance d, the running counts of all
  (`count_all[d]`) and relevant (`count_rel[d]`) items seen so far; each relevant item j records
  (d, p, c) = its distance and those two counts before it. After the pass, with
  A(d) = sum_{e<d} n(e) and B(d) = sum_{e<d} n_rel(e):
    rank(j) = A(d) + p + 1,  hits(j) = B(d) + c + 1  (relevant items ranked at or before j),
    AP = (1 / R) sum_{relevant j} hits(j) / rank(j).

  Args:
    query_words, database_words: uint64 codes `[Q, W]`, `[N, W]`.
    query_labels, database_labels: uint64 label bit sets `[Q, LW]`, `[N, LW]`.
    start, stop: the query rows to do.
    map_at, precision_at: int64 `[a]`, `[b]` k values, each already clipped to 1..N.
    ap: float64 `[Q]` out, AP (0 without relevant items).
    ap_at: float64 `[Q, a]` out, sum_{r<=k} P(r) rel(r) / sum_{r<=k} rel(r) (0 if none).
    hits_at: int64 `[Q, b]` out, number of relevant items among the top k.
    hist_all, hist_rel: int64 `[Q, q + 1]` out, numbers of all / relevant items at each
      distance; q + 1 must exceed every distance.
  """
  num_database = database_words.shape[0]
  num_dist = hist_all.shape[1]
  single_word = database_words.shape[1] == 1 and database_labels.shape[1] == 1
  rel_d = np.empty(num_database, np.int32)
  rel_p = np.empty(num_database, np.int32)
  rel_c = np.empty(num_database, np.int32)
  count_all = np.empty(num_dist, np.int64)
  count_rel = np.empty(num_dist, np.int64)
  before_all = np.empty(num_dist, np.int64)
  before_rel = np.empty(num_dist, np.int64)
  max_k = 0
  for k in map_at:
    max_k = max(max_k, k)
  for k in precision_at:
    max_k = max(max_k, k)
  top_rel = np.empty(max_k + 1, np.bool_)
  ap_sum = np.empty(map_at.shape[0])
  ap_count = np.empty(map_at.shape[0], np.int64)
  # Fresh 1-D copies for the fast path: indexing them is measured ~1.5x faster in the hot loop
  # than indexing the `[N, 1]` arrays, and faster than 1-D views of them (a fresh array cannot
  # alias the counters, which lets LLVM keep more in registers).
  codes = database_words[:, 0].copy()
  labels = database_labels[:, 0].copy()
  for i in range(start, stop):
    count_all[:] = 0
    count_rel[:] = 0
    num_rel = 0
    if single_word:
      # Hot loop: ~1.5 ns per pair. The branch on relevance was measured faster than a
      # branch-free variant (which pays for a store per item).
      code = query_words[i, 0]
      label = query_labels[i, 0]
      for j in range(num_database):
        d = np.int64(popcount(code ^ codes[j]))
        p = count_all[d]
        count_all[d] = p + 1
        if label & labels[j]:
          c = count_rel[d]
          count_rel[d] = c + 1
          rel_d[num_rel] = d
          rel_p[num_rel] = p
          rel_c[num_rel] = c
          num_rel += 1
    else:
      for j in range(num_database):
        d = _distance(query_words, i, database_words, j)
        p = count_all[d]
        count_all[d] = p + 1
        if _overlap(query_labels, i, database_labels, j):
          c = count_rel[d]
          count_rel[d] = c + 1
          rel_d[num_rel] = d
          rel_p[num_rel] = p
          rel_c[num_rel] = c
          num_rel += 1
    total_all = 0
    total_rel = 0
    for d in range(num_dist):
      before_all[d] = total_all
      before_rel[d] = total_rel
      total_all += count_all[d]
      total_rel += count_rel[d]
      hist_all[i, d] = count_all[d]
      hist_rel[i, d] = count_rel[d]
    precision_sum = _precision_sum(rel_d, rel_p, rel_c, num_rel, before_all, before_rel)
    # Relevance of the top max_k ranks, by scattering each relevant item's rank; ranks past
    # max_k land in one spare slot (no branch: a branch here mispredicts often).
    if max_k > 0:
      top_rel[:] = False
      for t in range(num_rel):
        top_rel[min(before_all[rel_d[t]] + rel_p[t], max_k)] = True
      ap_sum[:] = 0.0
      ap_count[:] = 0
      hits = 0
      for r in range(max_k):
        if top_rel[r]:
          hits += 1
          precision = hits / (r + 1)
          for m in range(map_at.shape[0]):
            if r < map_at[m]:
              ap_sum[m] += precision
              ap_count[m] += 1
        for m in range(precision_at.shape[0]):
          if r + 1 == precision_at[m]:
            hits_at[i, m] = hits
      for m in range(map_at.shape[0]):
        ap_at[i, m] = ap_sum[m] / ap_count[m] if ap_count[m] else 0.0
    ap[i] = precision_sum / num_rel if num_rel else 0.0


@numba.njit(fastmath={"reassoc"})
def _precision_sum(rel_d, rel_p, rel_c, num_rel, before_all, before_rel):
  """sum_t hits_t / rank_t over the relevant items' records (see `ranking_stats`).

  Reassociation lets LLVM vectorize the sum (several partial sums); the order is still fixed
  by the code, so the result is deterministic.
  """
  total = 0.0
  for t in range(num_rel):
    d = rel_d[t]
    total += (before_rel[d] + rel_c[t] + 1) / (before_all[d] + rel_p[t] + 1)
  return total


@numba.njit(**_JIT)
def full_ranking(query_words, database_words, start, stop, num_dist, order):
  """Counting sort: `order[i]` int32 `[N]` = database indices by (distance, index).

  Two passes per query: a histogram of distances gives each distance's first slot; a second
  pass in index order drops every item into the next free slot of its distance (stable).
  """
  num_database = database_words.shape[0]
  dist = np.empty(num_database, np.int32)
  slot = np.empty(num_dist, np.int64)
  for i in range(start, stop):
    slot[:] = 0
    for j in range(num_database):
      d = _distance(query_words, i, database_words, j)
      dist[j] = d
      slot[d] += 1
    total = 0
    for d in range(num_dist):
      n = slot[d]
      slot[d] = total
      total += n
    for j in range(num_database):
      d = dist[j]
      order[i, slot[d]] = j
      slot[d] += 1


# ----------------------------------------------------------------------------------------------
# k nearest neighbours by linear scan.


@numba.njit(inline="always")
def _knn_keep(j, d, k, num_dist, state, hist, buffer_index, buffer_dist):
  """Adds item j at distance d < bound to the candidates of `knn_scan`; updates the bound.

  state = int64 [size, bound, below]: candidates kept; the bound T (admit d < T), which is
  num_dist until k items are seen and then the smallest t with k admitted items within t;
  below = the number of admitted items with distance < T (all still kept, and < k).
  """
  size, bound, below = state[0], state[1], state[2]
  if size == buffer_index.shape[0]:
    # Keep what can still make the top k: every item below the bound, and the first k - below
    # at the bound (the buffer is in index order; later ties rank lower). Leaves <= k items.
    kept, at_bound = 0, k - below
    for t in range(size):
      dt = buffer_dist[t]
      keep = dt < bound
      if dt == bound and at_bound > 0:
        keep = True
        at_bound -= 1
      if keep:
        buffer_index[kept] = buffer_index[t]
        buffer_dist[kept] = dt
        kept += 1
    size = kept
  buffer_index[size] = j
  buffer_dist[size] = d
  size += 1
  hist[d] += 1
  if bound == num_dist:
    if size >= k:  # Now k items are known: T = the smallest t with k of them within t.
      below = 0
      bound = 0
      while below + hist[bound] < k:
        below += hist[bound]
        bound += 1
  else:
    # An item at distance >= T would come after k items within T in (distance, index) order.
    below += 1
    while below >= k:
      bound -= 1
      below -= hist[bound]
  state[0], state[1], state[2] = size, bound, below


@numba.njit(**_JIT)
def knn_scan(query_words, database_words, start, stop, k, num_dist, out_index, out_dist):
  """The k nearest database items of each query, by (distance, index); one pass, no heap.

  Keeps a buffer of candidates in index order and a histogram of their distances. Once k
  candidates lie within distance t (the smallest such t), an item is kept only when its
  distance is below t: one at distance t comes later in index order than the >= k kept ones,
  so it cannot be among the first k. t only shrinks, so after the first few thousand items
  almost every item costs an XOR, a popcount and a well-predicted comparison. A full buffer
  drops what can no longer make the top k (`_knn_keep`), so it never holds more than k after.

  Args:
    start, stop: query rows to do.
    k: 1..N.
    num_dist: q + 1 (above every distance).
    out_index: int64 `[Q, k]` out; out_dist: int32 `[Q, k]` out.
  """
  num_database = database_words.shape[0]
  capacity = max(4 * k, 1024)
  buffer_index = np.empty(capacity, np.int64)
  buffer_dist = np.empty(capacity, np.int32)
  hist = np.empty(num_dist + 1, np.int64)
  slot = np.empty(num_dist + 1, np.int64)
  state = np.empty(3, np.int64)
  codes = database_words[:, 0].copy()  # fresh 1-D copy: faster in the hot loop (see above)
  for i in range(start, stop):
    hist[:] = 0
    state[0], state[1], state[2] = 0, num_dist, 0
    # The scan loop is written twice so that the one-word loop stays minimal.
    if database_words.shape[1] == 1:
      code = query_words[i, 0]
      for j in range(num_database):
        d = np.int64(popcount(code ^ codes[j]))
        if d < state[1]:
          _knn_keep(j, d, k, num_dist, state, hist, buffer_index, buffer_dist)
    else:
      for j in range(num_database):
        d = _distance(query_words, i, database_words, j)
        if d < state[1]:
          _knn_keep(j, d, k, num_dist, state, hist, buffer_index, buffer_dist)
    size = state[0]
    # Counting sort of the kept candidates (in index order) by distance; take the first k.
    slot[:] = 0
    for t in range(size):
      slot[buffer_dist[t]] += 1
    total = 0
    for d in range(num_dist):
      n = slot[d]
      slot[d] = total
      total += n
    for t in range(size):
      d = buffer_dist[t]
      s = slot[d]
      slot[d] = s + 1
      if s < k:
        out_index[i, s] = buffer_index[t]
        out_dist[i, s] = d


# ----------------------------------------------------------------------------------------------
# Radius search: linear scan, and hash tables.


@numba.njit
def _grow(array, size):
  """`array` with room for at least one more entry after `size` (doubling)."""
  if size < array.shape[0]:
    return array
  grown = np.empty(2 * array.shape[0] + 16, array.dtype)
  grown[:size] = array[:size]
  return grown


@numba.njit
def _order_segment(found, found_dist, begin, end, radius, index_out, dist_out, slot):
  """Stable counting sort of `found[begin:end]` (ascending index) by distance into the outputs."""
  slot[:] = 0
  for t in range(begin, end):
    slot[found_dist[t] + 1] += 1
  slot[0] = begin
  for d in range(radius + 1):
    slot[d + 1] += slot[d]
  for t in range(begin, end):
    d = found_dist[t]
    s = slot[d]
    slot[d] = s + 1
    index_out[s] = found[t]
    dist_out[s] = d


@numba.njit
def _ordered_by_distance(found, found_dist, size, counts, radius):
  """`(counts, index, distance)` with each query's segment of `found[:size]` ordered by
  (distance, index): the output layout of `radius_scan` and `table_search`."""
  index_out = np.empty(size, np.int64)
  dist_out = np.empty(size, np.int32)
  slot = np.empty(radius + 2, np.int64)
  begin = 0
  for c in counts:
    _order_segment(found, found_dist, begin, begin + c, radius, index_out, dist_out, slot)
    begin += c
  return counts, index_out, dist_out


@numba.njit(**_JIT)
def radius_scan(query_words, database_words, start, stop, radius):
  """Linear scan: items within `radius` of queries `[start, stop)`, by (distance, index).

  Two passes per query: a count (a branch-free loop that vectorises), then, for a non-empty
  ball, the collection. Returns (counts int64 `[stop - start]`, indices int64
  `[sum counts]`, distances int32): the results of the queries one after the other.
  """
  num_database = database_words.shape[0]
  single_word = database_words.shape[1] == 1
  # A 1-D view, not a copy: a single query must not pay for copying the database.
  codes = database_words.reshape(database_words.size)
  counts = np.zeros(stop - start, np.int64)
  for i in range(start, stop):
    count = 0
    if single_word:
      code = query_words[i, 0]
      for j in range(num_database):
        count += popcount(code ^ codes[j]) <= radius
    else:
      for j in range(num_database):
        count += _distance(query_words, i, database_words, j) <= radius
    counts[i - start] = count
  found = np.empty(counts.sum(), np.int64)
  found_dist = np.empty(found.shape[0], np.int32)
  size = 0
  for i in range(start, stop):
    if counts[i - start] == 0:
      continue
    for j in range(num_database):
      if single_word:
        d = np.int64(popcount(query_words[i, 0] ^ codes[j]))
      else:
        d = _distance(query_words, i, database_words, j)
      if d <= radius:
        found[size] = j
        found_dist[size] = d
        size += 1
  return _ordered_by_distance(found, found_dist, size, counts, radius)


_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / golden ratio (Fibonacci hashing)


@numba.njit(inline="always")
def _home_slot(key, table_bits):
  return np.int64((key * _HASH_MULTIPLIER) >> np.uint64(64 - table_bits))


@numba.njit(**_JIT)
def build_hash_table(unique_keys, table_bits, first_id):
  """Open addressing with linear probing over `2**table_bits >= 2 U` slots.

  Returns int32 `[2**table_bits]`: `first_id + u` in the slot of `unique_keys[u]`, -1 empty.
  """
  size = 1 << table_bits
  slots = np.full(size, -1, np.int32)
  for u in range(unique_keys.shape[0]):
    h = _home_slot(unique_keys[u], table_bits)
    while slots[h] >= 0:
      h = (h + 1) & (size - 1)
    slots[h] = first_id + u
  return slots


@numba.njit(inline="always")
def _lookup(slots, slot_start, table_bits, keys, key):
  """Global id of `key` in the table at `slots[slot_start:]`, or -1."""
  mask = (1 << table_bits) - 1
  h = _home_slot(key, table_bits)
  while True:
    g = slots[slot_start + h]
    if g < 0:
      return -1
    if keys[g] == key:
      return g
    h = (h + 1) & mask


@numba.njit
def _ball_keys(key, positions, num_positions, part_radius, out):
  """Every key within `part_radius` (<= 2) flips of `key` at the given bit positions."""
  out[0] = key
  size = 1
  if part_radius >= 1:
    for a in range(num_positions):
      flip_a = key ^ (np.uint64(1) << np.uint64(positions[a]))
      out[size] = flip_a
      size += 1
      if part_radius >= 2:
        for b in range(a + 1, num_positions):
          out[size] = flip_a ^ (np.uint64(1) << np.uint64(positions[b]))
          size += 1
  return size


@numba.njit
def _part_key(query_words, i, part_word, part_bits, part_len, m):
  mask = np.uint64(0)
  for t in range(part_len[m]):
    mask |= np.uint64(1) << np.uint64(part_bits[m, t])
  return query_words[i, part_word[m]] & mask


@numba.njit(**_JIT)
def table_candidates(query_words, start, stop, part_word, part_bits, part_len, part_radius, tables):
  """Database entries the tables hand each query `[start, stop)` (before deduplication).

  The engine compares this with N to choose, per query, the tables or the linear scan.
  `tables` = (slots, slot_start, table_bits, keys, starts, ends, members), see `table_search`.
  """
  slots, slot_start, table_bits, keys, starts, ends, _ = tables
  out = np.zeros(stop - start, np.int64)
  probes = np.empty(1 + part_bits.shape[1] * (part_bits.shape[1] + 1) // 2, np.uint64)
  for i in range(start, stop):
    for m in range(part_word.shape[0]):
      key = _part_key(query_words, i, part_word, part_bits, part_len, m)
      num_probes = _ball_keys(key, part_bits[m], part_len[m], part_radius, probes)
      for t in range(num_probes):
        g = _lookup(slots, slot_start[m], table_bits[m], keys, probes[t])
        if g >= 0:
          out[i - start] += ends[g] - starts[g]
  return out


@numba.njit(**_JIT)
def table_search(
  query_words, database_words, rows, radius, part_word, part_bits, part_len, part_radius, tables
):
  """Hamming-ball lookup through (multi-index) hash tables, exact, for the query `rows`.

  The code bits are split into M disjoint parts (M = 1: one table of whole codes). If two codes
  differ in at most r bits, some part differs in at most floor(r / M) bits (pigeonhole), so
  probing every key within `part_radius` = floor(r / M) flips of each query part finds the
  whole ball; each candidate's full distance is then checked, and a candidate found through
  several parts is kept once.

  Args:
    query_words, database_words: uint64 codes `[Q, W]`, `[N, W]`.
    rows: int64 query rows to do.
    radius: ball radius r.
    part_word: int64 `[M]`, the code word that part m lies in.
    part_bits: int64 `[M, P]`, its bit positions in that word (first `part_len[m]` valid).
    part_len: int64 `[M]`.
    part_radius: floor(r / M), at most 2.
    tables: (slots int32, slot_start int64 `[M]`, table_bits int64 `[M]`, keys uint64 `[G]`,
      starts int64 `[G]`, ends int64 `[G]`, members int32): part m's table is
      `slots[slot_start[m]:][:2**table_bits[m]]`, holding global ids g of its distinct part
      values `keys[g]`, whose database items are `members[starts[g]:ends[g]]` (ascending).

  Returns:
    As `radius_scan`, for `rows` in order.
  """
  slots, slot_start, table_bits, keys, starts, ends, members = tables
  counts = np.zeros(rows.shape[0], np.int64)
  probes = np.empty(1 + part_bits.shape[1] * (part_bits.shape[1] + 1) // 2, np.uint64)
  found = np.empty(1024, np.int64)
  found_dist = np.empty(1024, np.int32)
  size = 0
  for r in range(rows.shape[0]):
    i = rows[r]
    begin = size
    for m in range(part_word.shape[0]):
      key = _part_key(query_words, i, part_word, part_bits, part_len, m)
      num_probes = _ball_keys(key, part_bits[m], part_len[m], part_radius, probes)
      for t in range(num_probes):
        g = _lookup(slots, slot_start[m], table_bits[m], keys, probes[t])
        if g < 0:
          continue
        for s in range(starts[g], ends[g]):
          j = members[s]
          d = _distance(query_words, i, database_words, j)
          if d <= radius:
            found = _grow(found, size)
            found_dist = _grow(found_dist, size)
            found[size] = j
            found_dist[size] = d
            size += 1
    # Parts find items out of index order, and an item close in several parts more than once:
    # sort this query's (few) items by index and drop repeats. (A "seen" array of N flags
    # would cost more to clear than a lookup takes.)
    order = np.argsort(found[begin:size])
    sorted_found = found[begin:size][order]
    sorted_dist = found_dist[begin:size][order]
    kept = begin
    for t in range(sorted_found.shape[0]):
      if t == 0 or sorted_found[t] != sorted_found[t - 1]:
        found[kept] = sorted_found[t]
        found_dist[kept] = sorted_dist[t]
        kept += 1
    size = kept
    counts[r] = size - begin
  return _ordered_by_distance(found, found_dist, size, counts, radius)
