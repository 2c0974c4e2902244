"""Train-step throughput (images/s) of the DSH net + DSH loss, JAX vs a PyTorch baseline.

  python benchmarks/train_throughput.py [--batch 128] [--bits 48] [--steps 30] [--rounds 3]

Measures the jitted JAX train step of `hashing.steps.make_train_step` (Adam, no augmentation,
uint8 CIFAR-sized input) and, when PyTorch is installed, the same network, loss and optimizer
in PyTorch eager mode, in the same process, alternating rounds so that both see the same
machine load. Prints images/s of each and the ratio JAX / PyTorch (> 1: JAX is faster). The
last line is one JSON object.
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


def load_dsh_config(bits: int, batch: int):
  spec = importlib.util.spec_from_file_location("dsh_config", ROOT / "configs" / "dsh.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(f"bits={bits},data=cifar10-dnnh")
  config.train.batch_size = batch
  config.augment.flip, config.augment.crop_padding = False, 0
  return config


def jax_runner(images, labels, bits):
  config = load_dsh_config(bits, images.shape[0])
  model = models.build_model(config.model, [125.0, 123.0, 114.0], [63.0, 62.0, 66.0])
  optimizer = optim.make_optimizer(config.train, 10_000)
  params = model.init(jax.random.key(0), images[:1])
  state = {"params": params, "opt": optimizer.init(params)}
  step = steps.make_train_step(objectives.make_objective(config, model), optimizer, config.augment)
  hyper = objectives.hyperparameters(config)
  key, batch = jax.random.key(1), {"images": images, "labels": labels}

  def run(num_steps):
    for _ in range(num_steps):
      params, opt = state["params"], state["opt"]
      state["params"], state["opt"], loss, _ = step(params, opt, batch, key, hyper)
    loss.block_until_ready()

  return run


def torch_runner(images, labels, bits):
  import torch
  from torch import nn

  net = nn.Sequential(
    nn.Conv2d(3, 32, 5, padding=2),
    nn.MaxPool2d(3, 2, padding=1),
    nn.ReLU(),
    nn.Conv2d(32, 32, 5, padding=2),
    nn.ReLU(),
    nn.AvgPool2d(3, 2, padding=1),
    nn.Conv2d(32, 64, 5, padding=2),
    nn.ReLU(),
    nn.AvgPool2d(3, 2, padding=1),
    nn.Flatten(),
    nn.Linear(64 * 4 * 4, 500),
    nn.ReLU(),
    nn.Linear(500, bits),
  )
  optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
  x_uint8 = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
  y = torch.from_numpy(labels).float()
  mean = torch.tensor([125.0, 123.0, 114.0]).view(1, 3, 1, 1)
  std = torch.tensor([63.0, 62.0, 66.0]).view(1, 3, 1, 1)
  margin, alpha, batch = 2.0 * bits, 0.01, images.shape[0]

  def run(num_steps):
    for _ in range(num_steps):
      codes = net((x_uint8.float() - mean) / std)
      s = (y @ y.T > 0).float()
      d = torch.cdist(codes, codes).pow(2)
      pair = 0.5 * s * d + 0.5 * (1 - s) * torch.clamp(margin - d, min=0)
      off = 1 - torch.eye(batch)
      loss = (pair * off).sum() / (batch * (batch - 1))
      loss = loss + 2 * alpha * (codes.abs() - 1).abs().sum(1).mean()
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()

  return run


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--bits", type=int, default=48)
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (args.batch, 32, 32, 3), dtype=np.uint8)
  labels = np.eye(10, dtype=np.uint8)[rng.integers(0, 10, args.batch)]

  runners = {"jax": jax_runner(images, labels, args.bits)}
  if importlib.util.find_spec("torch") is not None:
    runners["torch"] = torch_runner(images, labels, args.bits)
  for run in runners.values():
    run(3)  # compile / warm up
  best = {name: float("inf") for name in runners}
  for _ in range(args.rounds):  # alternate, keep each one's best round
    for name, run in runners.items():
      start = time.perf_counter()
      run(args.steps)
      best[name] = min(best[name], time.perf_counter() - start)
  images_per_sec = {name: args.steps * args.batch / t for name, t in best.items()}
  for name, value in images_per_sec.items():
    print(f"{name:>6}: {value:8.0f} images/s (batch {args.batch}, {args.bits} bits)")
  ratio = images_per_sec["jax"] / images_per_sec["torch"] if "torch" in runners else None
  if ratio is not None:
    print(f"JAX / PyTorch eager: {ratio:.2f}x")
  summary = {
    "backend": jax.default_backend(),
    "batch": args.batch,
    "jax_images_per_sec": round(images_per_sec["jax"], 1),
    "torch_images_per_sec": round(images_per_sec["torch"], 1) if ratio else None,
    "jax_over_torch": round(ratio, 3) if ratio else None,
  }
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
