"""Explicit-triplet train step: shared weights through vmap vs one concatenated batch vs three
separate applies, for each backbone; ratios against vmap (the design's shape) in the same run.

  python benchmarks/triplet_apply.py [--triplets 64] [--bits 48] [--steps 10] [--rounds 3]

The three modes compute the same loss and gradients (tests/test_objectives.py); this measures
which is fastest on the current backend. Uses the real `configs/dnnh.py` (Adam, no
augmentation) on random uint8 CIFAR-sized triplets. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json

import jax
import numpy as np
from timing import best_seconds, load_config, step_runner

from hashing import models  # noqa: E402 (importable once timing put the project on sys.path)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--triplets", type=int, default=64)
  parser.add_argument("--bits", type=int, default=48)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--backbones", default="dsh,nin-narrow")
  args = parser.parse_args()
  images = np.random.default_rng(0).integers(0, 256, (3, args.triplets, 32, 32, 3), np.uint8)
  summary = {"backend": jax.default_backend(), "triplets": args.triplets, "bits": args.bits}
  for backbone in args.backbones.split(","):
    runners = {}
    for mode in models.TRIPLET_APPLY:
      config = load_config("dnnh", f"bits={args.bits},backbone={backbone}")
      config.train.triplet_apply = mode
      runners[mode] = step_runner(config, {"images": images})
    best = best_seconds(runners, args.steps, args.rounds)
    for mode, seconds in best.items():
      images_per_sec = args.steps * 3 * args.triplets / seconds
      ratio = best["vmap"] / seconds
      print(f"{backbone:>10} {mode:>8}: {images_per_sec:7.0f} images/s, {ratio:.2f}x vmap")
      summary[f"{backbone}/{mode}_over_vmap"] = round(ratio, 3)
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
