"""Speed and result of CNNH stage 1 (hashing.two_stage) on CIFAR-10 labels, q = 48 bits.

  python benchmarks/two_stage.py [--bits 48] [--sweeps 6] [--seed 0]

Labels are the real CIFAR-10 training labels from $HASHING_DATA_DIR/cifar10/train*.npz when
present (else uniform random classes, said so in the output):
  * n = 5,000 (500 per class, drawn with a seeded permutation, as the cifar10-dnnh protocol's
    training set) and n = 50,000 (the whole training set);
  * for each: compilation time of one sweep, then the wall time of `stage1_codes` (all sweeps,
    objective evaluations included), f(H) after each sweep divided by f(0) = q^2 n^2, and how
    many distinct codes each class got;
  * baseline, in the same run: one sweep at n = 5,000 by a plain sequential per-entry jitted
    loop (one `fori_loop` step per entry, (S h_j)_i recomputed in O(n) from the group table,
    H^T H updated in O(q)) against `two_stage.sweep` from the same start; both run the same
    algorithm in the same order, so the largest difference of their results is printed too
    (float32 rounding only: in float64 they agree to ~1e-10).
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hashing import two_stage  # noqa: E402


def cifar10_classes() -> tuple[np.ndarray, str]:
  """The 50,000 training class indices and where they came from."""
  data_dir = pathlib.Path(os.environ.get("HASHING_DATA_DIR", ""), "cifar10")
  shards = sorted(data_dir.glob("train*.npz"))
  if shards:
    return np.concatenate([np.load(path)["label"] for path in shards]), "CIFAR-10 train labels"
  classes = np.random.default_rng(0).integers(0, 10, 50_000)
  return classes, "RANDOM classes (no $HASHING_DATA_DIR/cifar10/train*.npz found)"


def per_class_sample(classes: np.ndarray, per_class: int, seed: int) -> np.ndarray:
  """`per_class` images of each class, the first ones in a seeded permutation."""
  order = np.random.default_rng(seed).permutation(len(classes))
  return np.concatenate([order[classes[order] == c][:per_class] for c in np.unique(classes)])


@jax.jit
def per_entry_sweep(h: jax.Array, group_of: jax.Array, table: jax.Array) -> jax.Array:
  """Baseline: the same sweep as `two_stage.sweep`, one loop step per entry (row-major), with
  (S h_j)_i = T[g_i, g] . h_j recomputed in O(n) and H^T H kept up to date in O(q)."""
  n, q = h.shape

  def entry(e, carry):
    h, gram = carry
    i, j = e // q, e % q
    x = h[i]
    s_ij = table[group_of[i]][group_of] @ h[:, j]
    b = q * s_ij - x @ gram[:, j]
    new = two_stage.newton_update(x[j], b, gram[j, j], q - x @ x)
    d = new - x[j]
    # H_ij += d changes H^T H's row and column j: by d x_k off the diagonal, 2 d x_j + d^2 on it.
    col = (gram[:, j] + d * x).at[j].add(d * x[j] + d * d)
    return h.at[i, j].set(new), gram.at[:, j].set(col).at[j, :].set(col)

  return jax.lax.fori_loop(0, n * q, entry, (h, h.T @ h))[0]


def timed(fn, *args, **kwargs) -> tuple[float, object]:
  """(wall seconds, result) of one call, waiting for JAX's asynchronous work."""
  start = time.perf_counter()
  result = jax.block_until_ready(fn(*args, **kwargs))
  return time.perf_counter() - start, result


def compile_seconds(jitted, *args) -> float:
  """Ahead-of-time compilation time; later calls with the same shapes reuse the executable."""
  return timed(lambda: jitted.lower(*args).compile())[0]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--bits", type=int, default=48)
  parser.add_argument("--sweeps", type=int, default=6)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  classes, source = cifar10_classes()
  print(f"labels: {source}; q = {args.bits} bits, {args.sweeps} sweeps, seed {args.seed}")
  out: dict = {"labels": source, "bits": args.bits, "sweeps": args.sweeps}

  for n, subset in ((5_000, per_class_sample(classes, 500, args.seed)), (50_000, None)):
    cls = classes if subset is None else classes[subset]
    labels = np.eye(10, dtype=np.uint8)[cls]
    group_of, table = two_stage.similarity_groups(labels)
    h0 = jax.random.uniform(jax.random.key(args.seed), (n, args.bits), minval=-1.0, maxval=1.0)
    compile_s = compile_seconds(two_stage.sweep, h0, group_of, table)
    wall_s, (codes, history) = timed(
      two_stage.stage1_codes, labels, args.bits, sweeps=args.sweeps, seed=args.seed
    )
    scaled = history / (args.bits**2 * n**2)
    distinct = [len(np.unique(codes[cls == c], axis=0)) for c in range(10)]
    print(
      f"n = {n:,}: compile {compile_s:.1f} s, stage 1 {wall_s:.1f} s "
      f"({wall_s / args.sweeps:.2f} s per sweep), final f = {history[-1]:.6g}, "
      f"f / (q^2 n^2) = {scaled[-1]:.5f}"
    )
    print(f"  f / (q^2 n^2) per sweep: {' '.join(f'{v:.5f}' for v in scaled)}")
    print(f"  distinct codes per class: {distinct}")
    out[f"n{n}"] = {
      "compile_s": compile_s,
      "stage1_s": wall_s,
      "final_f": history[-1],
      "final_f_scaled": scaled[-1],
      "distinct_codes_per_class": distinct,
    }

    if n == 5_000:
      plain_compile_s = compile_seconds(per_entry_sweep, h0, group_of, table)
      plain_s, plain_h = timed(per_entry_sweep, h0, group_of, table)
      fast_s, fast_h = timed(two_stage.sweep, h0, group_of, table)
      diff = float(jnp.max(jnp.abs(plain_h - fast_h)))
      print(
        f"  one sweep at n = {n:,}: two_stage.sweep {fast_s:.3f} s, plain per-entry loop "
        f"{plain_s:.2f} s (compile {plain_compile_s:.1f} s): {plain_s / fast_s:.0f}x faster; "
        f"max |H difference| {diff:.1e} (float32 rounding, amplified along the sweep)"
      )
      out.update(one_sweep_s=fast_s, plain_one_sweep_s=plain_s, speedup=plain_s / fast_s)

  print(json.dumps(out))


if __name__ == "__main__":
  main()
