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

import jax
import numpy as np
from timing import PIXEL_MEAN, PIXEL_STD, best_seconds, load_config, step_runner


def jax_runner(images, labels, bits):
  config = load_config("dsh", f"bits={bits},data=cifar10-dnnh")
  config.train.batch_size = images.shape[0]
  return step_runner(config, {"images": images, "labels": labels})


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
  mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
  std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
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
  best = best_seconds(runners, args.steps, args.rounds)
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
