"""Explicit-triplet train step: shared weights through vmap vs one concatenated batch vs three
separate applies, for each backbone; ratios against vmap (the design's shape) in the same run.

  python benchmarks/triplet_apply.py [--triplets 64] [--bits 48] [--steps 10] [--rounds 3]

The three modes compute the same loss and gradients (tests/test_objectives.py); this measures
which is fastest on the current backend. Uses the real `configs/dnnh.py` (Adam, no
augmentation) on random uint8 CIFAR-sized triplets. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys
import time

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hashing import models, objectives, optim, steps  # noqa: E402


def dnnh_config(arg: str):
  spec = importlib.util.spec_from_file_location("dnnh_config", ROOT / "configs" / "dnnh.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  config.augment.flip, config.augment.crop_padding = False, 0
  return config


def step_runner(backbone: str, mode: str, images: np.ndarray, bits: int):
  """`run(num_steps)` training on one fixed triplet batch `images` `[3, B, 32, 32, 3]`."""
  config = dnnh_config(f"bits={bits},backbone={backbone}")
  config.train.triplet_apply = mode
  model = models.build_model(config.model, [125.0, 123.0, 114.0], [63.0, 62.0, 66.0])
  optimizer = optim.make_optimizer(config.train, 10_000)
  params = model.init(jax.random.key(0), images[0, :1])
  state = {"params": params, "opt": optimizer.init(params)}
  step = steps.make_train_step(objectives.make_objective(config, model), optimizer, config.augment)
  hyper = objectives.hyperparameters(config)
  key, batch = jax.random.key(1), {"images": images}

  def run(num_steps):
    for _ in range(num_steps):
      params, opt = state["params"], state["opt"]
      state["params"], state["opt"], loss, _ = step(params, opt, batch, key, hyper)
    loss.block_until_ready()

  return run


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
    runners = {m: step_runner(backbone, m, images, args.bits) for m in models.TRIPLET_APPLY}
    for run in runners.values():
      run(2)  # compile and warm up
    best = {mode: float("inf") for mode in runners}
    for _ in range(args.rounds):  # alternate, keep each one's best round
      for mode, run in runners.items():
        start = time.perf_counter()
        run(args.steps)
        best[mode] = min(best[mode], time.perf_counter() - start)
    for mode, seconds in best.items():
      images_per_sec = args.steps * 3 * args.triplets / seconds
      ratio = best["vmap"] / seconds
      print(f"{backbone:>10} {mode:>8}: {images_per_sec:7.0f} images/s, {ratio:.2f}x vmap")
      summary[f"{backbone}/{mode}_over_vmap"] = round(ratio, 3)
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
