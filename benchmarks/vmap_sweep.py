"""Sweep training: N runs in one vmapped step vs the same N runs one after another.

  python benchmarks/vmap_sweep.py [--runs 8] [--steps 100] [--bits 16] [--batch 64]

The runs are DSH on the embedded Fashion-MNIST data (real configs/dsh.py, one data split)
differing in seed, alpha and learning rate, as a seed/alpha sweep would. Both ways go through
`train.train_together` end to end (data, compilation, training, evaluation, files), so the
ratio is what a user of `launch.py --vmap` gets. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import jax
from timing import load_config

from hashing import train  # noqa: E402 (importable once timing put the project on sys.path)


def dsh_configs(runs: int, steps: int, bits: int, batch: int):
  configs = []
  for k in range(runs):
    config = load_config("dsh", f"bits={bits}", augment=True)
    config.seed, config.data.split_seed = k, 0
    config.loss.alpha = (0.0, 0.01, 0.1, 1.0)[k % 4]
    config.train.learning_rate = (1e-3, 3e-4)[k // 4 % 2]
    config.train.steps, config.train.batch_size = steps, batch
    config.train.checkpoint_every = steps
    configs.append(config)
  return configs


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=8)
  parser.add_argument("--steps", type=int, default=100)
  parser.add_argument("--bits", type=int, default=16)
  parser.add_argument("--batch", type=int, default=64)
  args = parser.parse_args()
  configs = dsh_configs(args.runs, args.steps, args.bits, args.batch)
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    for k, config in enumerate(configs):
      train.train_together([config], [f"{tmp}/alone-{k}"])
    alone = time.perf_counter() - start
    start = time.perf_counter()
    results = train.train_together(configs, [f"{tmp}/vmap-{k}" for k in range(args.runs)])
    together = time.perf_counter() - start
  print(f"{args.runs} runs one after another: {alone:.1f} s")
  print(f"{args.runs} runs in one vmapped step: {together:.1f} s ({alone / together:.2f}x faster)")
  summary = {
    "backend": jax.default_backend(),
    "runs": args.runs,
    "steps": args.steps,
    "batch": args.batch,
    "sequential_s": round(alone, 1),
    "vmap_s": round(together, 1),
    "speedup": round(alone / together, 3),
    "maps": [round(r["map"], 4) for r in results],
  }
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
