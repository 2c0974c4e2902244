"""Stage 1 of two-stage hashing (CNNH, Xia et al., AAAI 2014): approximate codes from labels.

The n training images get target codes H in {-1, 1}^{n x q} whose inner products reproduce the
pairwise similarity S (S_ij = 1 when images i and j share a label, else -1):

  minimise f(H) = ||q S - H H^T||_F^2,   H relaxed to [-1, 1]^{n x q}, then sign(H).

The paper's coordinate descent visits the entries one at a time (here row by row, and inside a
row column by column; one pass over all n q entries is a sweep) and moves H_ij by a Newton
step on the one-variable quartic d -> f(H + d e_i e_j^T). With R = q S - H H^T and h_j column j
of H, the exact change is

  f(H + d e_i e_j^T) - f(H) = -4 b d + (f''/2) d^2 + 4 H_ij d^3 + d^4,
  b = (R h_j)_i,   f'' = 4 ||h_j||^2 + 4 H_ij^2 - 4 R_ii,   R_ii = q - ||H_i||^2

(f'(0) = -4 b). `newton_update` documents the guard that makes every step non-increasing.

S is never built: it only depends on which distinct label set each image has (`group_of`, G
groups) through the G x G table T = 2 min(1, Y_G Y_G^T) - 1, so S v is a T lookup of per-group
sums of v, and H^T H is q x q. With these two statistics kept up to date, an entry costs O(q)
and a row O(q^2 + G q) instead of the O(n) of recomputing (R h_j)_i: a sweep is
O(n q (q + G)) work, and the memory O(n q + G^2).

Why entries are not updated in parallel: no two entries are independent. For i != k and
j != l, d^2 f / dH_ij dH_kl = 4 H_il H_kj (entries sharing a row or a column couple more), so
a simultaneous (Jacobi) update is a different algorithm, one that would need its own joint
line search to keep f from rising. This module keeps the exact sequential algorithm and
removes its O(n) per entry instead; what remains sequential is the n row steps of a sweep,
each vectorised over q and G (a jitted `lax.scan` over rows; about 30 us per row on the
project's 2-core CPU at q = 48 and G = 10, so ~1.5 s per sweep for n = 50,000: see
benchmarks/two_stage.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hashing.errors import UserError

# Beyond this many distinct label sets the G x G table T (float32) would pass 1.6 GB.
MAX_GROUPS = 20_000


def similarity_groups(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Group the images by their distinct label set: S_ij = table[group_of[i], group_of[j]].

  Args:
    labels: `[n, L]` multi-hot (0/1 or bool) labels; every image needs at least one label
      (an image without one would need S_ii = -1, i.e. ||H_i||^2 = -q, which no code reaches).

  Returns:
    group_of: `[n]` int32, the group (distinct label set) of each image.
    table: `[G, G]` float32 in {-1, 1}, 1 where two label sets share a label (diagonal all 1).
  """
  labels = np.asarray(labels)
  if labels.ndim != 2 or labels.shape[0] == 0 or labels.shape[1] == 0:
    raise UserError(
      f"labels have shape {labels.shape}; stage 1 needs multi-hot labels [n >= 1, L >= 1]."
    )
  if not np.isin(labels, (0, 1)).all():
    raise UserError("labels must be multi-hot (only 0 and 1); convert class indices first.")
  unlabelled = np.flatnonzero(labels.sum(axis=1) == 0)
  if len(unlabelled):
    raise UserError(
      f"{len(unlabelled)} images have no label (first: row {unlabelled[0]}); they are similar "
      "to nothing, not even themselves, so give them a label or drop them before stage 1."
    )
  unique, group_of = np.unique(labels.astype(bool), axis=0, return_inverse=True)
  if len(unique) > MAX_GROUPS:
    raise UserError(
      f"the labels have {len(unique):,} distinct label sets; stage 1 keeps a G x G table of "
      f"them and allows at most {MAX_GROUPS:,}. Drop rare labels or merge rare label sets."
    )
  unique = unique.astype(np.float32)
  table = np.where(unique @ unique.T > 0, 1.0, -1.0).astype(np.float32)
  return group_of.reshape(-1).astype(np.int32), table


def objective(labels: np.ndarray, h: np.ndarray) -> float:
  """f(H) = ||q S - H H^T||_F^2 for `h` `[n, q]` (any real values), in float64, without S.

  Expanding the square, with U = `[G, q]` per-group sums of the rows of H:

    f = q^2 ||S||_F^2 - 2 q tr(H^T S H) + ||H^T H||_F^2 = q^2 n^2 - 2 q <U, T U> + ||H^T H||_F^2

  (||S||_F^2 = n^2 as every entry is +-1). f(0) = q^2 n^2, the natural scale of f.
  """
  return _objective(np.asarray(h), *similarity_groups(labels))


def _objective(h: np.ndarray, group_of: np.ndarray, table: np.ndarray) -> float:
  h = np.asarray(h, np.float64)
  n, q = h.shape
  sums = np.zeros((len(table), q))
  np.add.at(sums, group_of, h)
  gram = h.T @ h
  return float(q * q * n * n - 2 * q * np.sum(sums * (table @ sums)) + np.sum(gram * gram))


def newton_update(h_ij: jax.Array, b: jax.Array, col_sq: jax.Array, r_ii: jax.Array) -> jax.Array:
  """The new value of one entry H_ij: the guarded Newton step on the 1-D quartic.

  Arguments are float32 scalars: H_ij, b = (R h_j)_i, col_sq = ||h_j||^2, r_ii = R_ii.

  Step: d = -f'(0) / f''(0) = 4 b / f''; where f'' <= 0 the quartic is locally concave and
  Newton's step would climb, so d goes to the edge of the box on the downhill side (sign of b)
  instead. d is clipped so that H_ij + d stays in [-1, 1].

  Guard: a Newton step on a quartic can overshoot (the cubic and quartic terms are ignored) and
  increase f, so the exact change -4 b d + (f''/2) d^2 + 4 H_ij d^3 + d^4 is evaluated in closed
  form and the step taken only when it is <= 0; otherwise H_ij stays. Every update therefore
  leaves f unchanged or lower (in exact arithmetic; in float32 up to rounding), and so does
  every sweep.
  """
  f2 = 4.0 * (col_sq + h_ij * h_ij - r_ii)
  lo, hi = -1.0 - h_ij, 1.0 - h_ij
  newton = 4.0 * b / jnp.where(f2 > 0, f2, 1.0)
  d = jnp.clip(jnp.where(f2 > 0, newton, jnp.where(b > 0, hi, lo)), lo, hi)
  change = d * (-4.0 * b + d * (0.5 * f2 + d * (4.0 * h_ij + d)))
  return jnp.where(change <= 0, jnp.clip(h_ij + d, -1.0, 1.0), h_ij)


def _update_row(x: jax.Array, s_others: jax.Array, gram_others: jax.Array) -> jax.Array:
  """Row i `x` `[q]` after one pass over its q entries, in order.

  s_others `[q]` = sum_{k != i} S_ik H_k and gram_others `[q, q]` = sum_{k != i} H_k^T H_k do
  not change while row i moves, and give each entry's quantities in O(q):
    (S h_j)_i = s_others_j + x_j (S_ii = 1),   ||h_j||^2 = gram_others_jj + x_j^2,
    (H H^T h_j)_i = x . (H^T h_j) = x . gram_others_j + ||x||^2 x_j,   R_ii = q - ||x||^2.
  """
  q = x.shape[0]

  def entry(j, carry):
    x, sq = carry  # sq = ||x||^2
    x_j = x[j]
    b = q * (s_others[j] + x_j) - jnp.dot(gram_others[j], x) - sq * x_j
    new = newton_update(x_j, b, gram_others[j, j] + x_j * x_j, q - sq)
    return x.at[j].set(new), sq + new * new - x_j * x_j

  # A fori_loop, not a Python loop: unrolling the q steps compiled ~40x slower and ran slower.
  return jax.lax.fori_loop(0, q, entry, (x, jnp.sum(x * x)))[0]


@jax.jit
def sweep(h: jax.Array, group_of: jax.Array, table: jax.Array) -> jax.Array:
  """One sweep of coordinate descent over all entries of `h` `[n, q]`, rows in order.

  `group_of` `[n]` and `table` `[G, G]` come from `similarity_groups`. The statistics
  U = per-group row sums `[G, q]` and H^T H `[q, q]` are recomputed exactly at the start (so
  float32 drift cannot build up across sweeps) and updated after each row in O(G q + q^2).

  The sequential dynamics amplify rounding: after one float32 sweep some entries differ by
  ~1e-2 from a float64 run of the same sweep (which a per-entry loop reproduces to 1e-10);
  the decrease of f does not depend on it.
  """
  gram = h.T @ h
  sums = jax.ops.segment_sum(h, group_of, num_segments=table.shape[0])

  def row(carry, inputs):
    gram, sums = carry
    x, g = inputs
    gram_others = gram - jnp.outer(x, x)
    s_others = table[g] @ sums - x  # T_gg = 1: remove row i's own contribution
    new = _update_row(x, s_others, gram_others)
    return (gram_others + jnp.outer(new, new), sums.at[g].add(new - x)), new

  _, h = jax.lax.scan(row, (gram, sums), (h, group_of))
  return h


def descend(labels: np.ndarray, h0: np.ndarray, *, sweeps: int) -> tuple[np.ndarray, np.ndarray]:
  """Coordinate descent on f(H) = ||q S - H H^T||_F^2 from `h0`, S given by `labels`.

  Args:
    labels: `[n, L]` multi-hot labels (see `similarity_groups`).
    h0: `[n, q]` start, entries in [-1, 1].
    sweeps: number of passes over all n q entries (>= 0).

  Returns:
    h: `[n, q]` float32 relaxed codes in [-1, 1].
    history: `[sweeps + 1]` float64, f before the first sweep and after each one
      (non-increasing, see `newton_update`).
  """
  group_of, table = similarity_groups(labels)
  h0 = np.asarray(h0, np.float32)
  if h0.ndim != 2 or h0.shape[0] != len(group_of) or h0.shape[1] == 0:
    raise UserError(f"h0 has shape {h0.shape}; it needs [n={len(group_of)}, q >= 1].")
  if not (np.abs(h0) <= 1).all():
    raise UserError("h0 must lie in [-1, 1]^{n x q}; clip it or draw it uniformly in [-1, 1].")
  return _descend(group_of, table, h0, sweeps)


def _check_count(name: str, value, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise UserError(f"{name}={value!r} must be an integer >= {minimum}.")


def _host_device() -> jax.Device | None:
  """Where stage 1 runs: the CPU, also beside a GPU. Coordinate descent is n * q dependent
  scalar updates, which a GPU runs as one tiny kernel each (on an H200 shared with three other
  trainings: 28 s for n = 5,000, q = 48, against 1 s on 2 CPU cores). None (the default
  device) where JAX has no CPU backend."""
  try:
    return jax.local_devices(backend="cpu")[0]  # this process's: each computes stage 1 itself
  except RuntimeError:  # e.g. JAX_PLATFORMS=cuda
    return None


def _descend(group_of, table, h0, sweeps: int) -> tuple[np.ndarray, np.ndarray]:
  """`descend` on grouped labels and a checked start (a NumPy array)."""
  _check_count("sweeps", sweeps, 0)
  # Sweeps are separate jit calls so that f is measured in float64 after each (float32 would
  # round f ~ q^2 n^2 to ~1e-7 relative, as large as late sweeps' decreases).
  history = [_objective(h0, group_of, table)]
  with jax.default_device(_host_device()):
    h = jnp.asarray(h0)
    for _ in range(sweeps):
      h = sweep(h, group_of, table)
      history.append(_objective(h, group_of, table))
  return np.asarray(h), np.array(history)


def sign_codes(h: np.ndarray) -> np.ndarray:
  """`[n, q]` real -> int8 codes in {-1, 1}, with sign(0) = +1."""
  return np.where(np.asarray(h) >= 0, 1, -1).astype(np.int8)


def stage1_codes(
  labels: np.ndarray, bits: int, *, sweeps: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """CNNH stage 1: target codes for the training images from their labels.

  H starts uniform in [-1, 1)^{n x bits} (drawn from `jax.random.key(seed)`), `descend` runs
  `sweeps` sweeps, and the codes are sign(H) (sign(0) = +1). Deterministic for a seed.

  Args:
    labels: `[n, L]` multi-hot labels; every image needs at least one label.
    bits: q, the code length (>= 1).
    sweeps: passes over all n q entries (>= 0; a few suffice on single-label data).
    seed: seed of the random start.

  Returns:
    codes: `[n, bits]` int8 in {-1, 1}.
    history: `[sweeps + 1]` float64, f(H) = ||q S - H H^T||_F^2 of the relaxed H at the start
      and after each sweep, non-increasing. Divide by f(0) = bits^2 n^2 to compare sizes.
  """
  _check_count("bits", bits, 1)
  group_of, table = similarity_groups(labels)
  shape = (len(group_of), int(bits))
  h0 = np.asarray(jax.random.uniform(jax.random.key(seed), shape, minval=-1.0, maxval=1.0))
  h, history = _descend(group_of, table, h0, sweeps)
  return sign_codes(h), history
