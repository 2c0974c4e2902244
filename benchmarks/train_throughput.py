"""Train-step throughput (images/s) of the project's networks and losses, JAX vs PyTorch.

  python benchmarks/train_throughput.py [--cases dsh-pairwise,nin-pairwise,nin-triplet]
      [--nin nin|nin-narrow] [--batch 128] [--bits 48] [--steps 30] [--rounds 3]
      [--dtype float32|bfloat16] [--torch-compile | --no-torch-compile]

Cases (the real configs, Adam, no augmentation, uint8 CIFAR-sized input):
  dsh-pairwise  DSH net + FC head + DSH pairwise loss (configs/dsh.py)
  nin-pairwise  network-in-network + FC head + DSH pairwise loss (configs/dsh.py backbone=...)
  nin-triplet   network-in-network + divide-and-encode + sigmoid + triplet loss on explicit
                triplets through vmap (configs/dnnh.py); a step sees 3 x batch images
For each case the jitted JAX step (`hashing.steps.make_train_step`) and, when PyTorch is
installed, the same network, loss and optimizer in PyTorch eager mode (and `torch.compile`,
by default on a GPU) run in the same process, in alternating rounds so that all see the same
machine load. Prints images/s, the ratios JAX / PyTorch (> 1: JAX is faster), and the FLOP/s
the JAX step achieves (XLA's count of the compiled step) against a matrix product of the same
dtype measured in the same run (the backend's practical peak). The last line is one JSON
object. `--nin` defaults to the full NIN on an accelerator and the narrow one on a CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from timing import PIXEL_MEAN, PIXEL_STD, best_seconds, load_config, step_runner

from hashing import models  # noqa: E402 (importable once timing put the project on sys.path)

CASES = ("dsh-pairwise", "nin-pairwise", "nin-triplet")


def case_config(case: str, bits: int, nin: str, batch: int, dtype: str):
  backbone = "dsh" if case.startswith("dsh") else nin
  name = "dnnh" if case.endswith("triplet") else "dsh"
  config = load_config(name, f"bits={bits},data=cifar10-dnnh,backbone={backbone}")
  config.train.batch_size, config.model.dtype = batch, dtype
  return config


def case_batch(case: str, batch: int, rng: np.random.Generator) -> dict:
  """Random uint8 images (and one-hot labels) in the layout the case's objective takes."""
  if case.endswith("triplet"):
    return {"images": rng.integers(0, 256, (3, batch, 32, 32, 3), dtype=np.uint8)}
  images = rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
  return {"images": images, "labels": np.eye(10, dtype=np.uint8)[rng.integers(0, 10, batch)]}


def matmul_flops_per_sec(dtype: str, size: int, repeats: int = 5) -> float:
  """Best FLOP/s of one `size` x `size` x `size` matrix product in `dtype` (the backend's
  default precision, as in the train step)."""
  a = jnp.ones((size, size), models.COMPUTE_DTYPES[dtype])
  product = jax.jit(lambda a, b: a @ b)
  product(a, a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    product(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size**3 / best


# ---------------------------------------------------------------------------------------------
# The PyTorch baseline: the same networks (models.py), losses (losses.py) and Adam.


def torch_network(config, device):
  """`config.model`'s backbone + head + output as a PyTorch module taking NCHW floats."""
  import torch
  from torch import nn

  backbone, features = models.BACKBONES[config.model.backbone](config.model, jnp.float32)
  if config.model.backbone == "dsh":
    w0, w1, w2 = backbone.widths
    layers = [
      nn.Conv2d(3, w0, 5, padding=2),
      nn.MaxPool2d(3, 2, padding=1),
      nn.ReLU(),
      nn.Conv2d(w0, w1, 5, padding=2),
      nn.ReLU(),
      nn.AvgPool2d(3, 2, padding=1),
      nn.Conv2d(w1, w2, 5, padding=2),
      nn.ReLU(),
      nn.AvgPool2d(3, 2, padding=1),
      nn.Flatten(),
      nn.Linear(w2 * 4 * 4, features),
      nn.ReLU(),
    ]
  else:
    w0, w1, w2, w3 = backbone.widths

    def conv(width_in, width_out, size):
      return [nn.Conv2d(width_in, width_out, size, padding=size // 2), nn.ReLU()]

    layers = [
      *conv(3, w0, 5), *conv(w0, w0, 1), nn.MaxPool2d(3, 2, padding=1),
      *conv(w0, w1, 5), *conv(w1, w1, 1), nn.MaxPool2d(3, 2, padding=1),
      *conv(w1, w2, 1), *conv(w2, w2, 1), nn.AvgPool2d(3, 2, padding=1),
      *conv(w2, w3, 3), *conv(w3, features, 1),
      nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ]  # fmt: skip
  bits = config.model.bits

  class DivideAndEncode(nn.Module):
    def __init__(self):
      super().__init__()
      self.kernel = nn.Parameter(torch.randn(bits, features // bits) / (features // bits) ** 0.5)
      self.bias = nn.Parameter(torch.zeros(bits))

    def forward(self, x):
      return torch.einsum("bks,ks->bk", x.view(x.shape[0], bits, -1), self.kernel) + self.bias

  head = DivideAndEncode() if config.model.head == "dae" else nn.Linear(features, bits)
  output = {"none": nn.Identity(), "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid()}
  return nn.Sequential(*layers, head, output[config.model.output]).to(device)


def torch_runner(config, batch: dict, compiled: bool):
  """`run(num_steps)` of the PyTorch step for `config` on the fixed `batch`."""
  import torch

  device = "cuda" if torch.cuda.is_available() else "cpu"
  net = torch_network(config, device)
  optimizer = torch.optim.Adam(net.parameters(), lr=config.train.learning_rate)
  mean = torch.tensor(PIXEL_MEAN, device=device).view(1, 3, 1, 1)
  std = torch.tensor(PIXEL_STD, device=device).view(1, 3, 1, 1)
  images = torch.from_numpy(batch["images"]).to(device)
  images = images.reshape(-1, *images.shape[-3:]).permute(0, 3, 1, 2).contiguous()
  autocast = torch.autocast(device, torch.bfloat16, enabled=config.model.dtype == "bfloat16")
  bits, loss_config = config.model.bits, config.loss

  if loss_config.name == "triplet":  # anchors, positives, negatives as one batch of 3B

    def loss_fn(images):
      with autocast:
        codes = net((images.float() - mean) / std).float()
      anchor, positive, negative = codes.chunk(3)
      to_positive = (anchor - positive).pow(2).sum(1)
      to_negative = (anchor - negative).pow(2).sum(1)
      return torch.clamp(loss_config.margin - (to_negative - to_positive), min=0).mean()

  else:  # DSH: all pairs of the batch, margin 2 * bits, regulariser toward +-1
    labels = torch.from_numpy(batch["labels"]).float().to(device)
    similar = (labels @ labels.T > 0).float()
    size = labels.shape[0]
    off_diagonal = 1 - torch.eye(size, device=device)
    margin, alpha = loss_config.margin or 2.0 * bits, loss_config.alpha

    def loss_fn(images):
      with autocast:
        codes = net((images.float() - mean) / std).float()
      distances = torch.cdist(codes, codes).pow(2)
      pair = 0.5 * similar * distances + 0.5 * (1 - similar) * torch.clamp(margin - distances, 0)
      loss = (pair * off_diagonal).sum() / (size * (size - 1))
      return loss + 2 * alpha * (codes.abs() - 1).abs().sum(1).mean()

  step_loss = torch.compile(loss_fn) if compiled else loss_fn

  def run(num_steps):
    for _ in range(num_steps):
      loss = step_loss(images)
      optimizer.zero_grad()
      loss.backward()
      optimizer.step()
    if device == "cuda":
      torch.cuda.synchronize()

  return run


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cases", default=",".join(CASES))
  parser.add_argument("--nin", default=None, help="nin | nin-narrow (default: by backend)")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--bits", type=int, default=48)
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--dtype", default="float32", choices=sorted(models.COMPUTE_DTYPES))
  parser.add_argument("--torch-compile", action=argparse.BooleanOptionalAction, default=None)
  args = parser.parse_args()
  backend = jax.default_backend()
  nin = args.nin or ("nin-narrow" if backend == "cpu" else "nin")
  has_torch = importlib.util.find_spec("torch") is not None
  if has_torch and args.torch_compile is None:
    import torch

    args.torch_compile = torch.cuda.is_available()
  peak = matmul_flops_per_sec(args.dtype, 2048 if backend == "cpu" else 8192)
  print(f"{backend}: {args.dtype} matrix product {peak / 1e12:.3f} TFLOP/s (the peak below)")
  summary = {"backend": backend, "batch": args.batch, "bits": args.bits, "dtype": args.dtype}
  summary.update(nin=nin, matmul_tflops=round(peak / 1e12, 4))
  rng = np.random.default_rng(0)
  for case in args.cases.split(","):
    if case not in CASES:
      parser.error(f"--cases: {case!r} is not one of {CASES}")
    config = case_config(case, args.bits, nin, args.batch, args.dtype)
    batch = case_batch(case, args.batch, rng)
    images_per_step = batch["images"].size // (32 * 32 * 3)
    runners = {"jax": step_runner(config, batch)}
    if has_torch:
      runners["torch-eager"] = torch_runner(config, batch, compiled=False)
      if args.torch_compile:
        runners["torch-compile"] = torch_runner(config, batch, compiled=True)
    best = best_seconds(runners, args.steps, args.rounds)
    rates = {name: args.steps * images_per_step / t for name, t in best.items()}
    achieved = runners["jax"].flops_per_step * args.steps / best["jax"]
    label = case.replace("nin", nin)
    print(
      f"{label}: JAX {rates['jax']:.0f} images/s, {achieved / 1e12:.3f} TFLOP/s "
      f"= {achieved / peak:.1%} of the matrix-product peak"
    )
    summary[f"{label}/jax_images_per_sec"] = round(rates["jax"], 1)
    summary[f"{label}/jax_fraction_of_peak"] = round(achieved / peak, 4)
    for name in runners:
      if name != "jax":
        ratio = rates["jax"] / rates[name]
        print(f"{label}: {name} {rates[name]:.0f} images/s; JAX / {name} {ratio:.2f}x")
        summary[f"{label}/jax_over_{name}"] = round(ratio, 3)
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
