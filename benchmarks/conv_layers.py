"""Where the train step's time goes: each convolution of the DSH net alone, JAX vs PyTorch.

  python benchmarks/conv_layers.py [--batch 128] [--repeats 10]

For each 5x5 'SAME' convolution of the DSH net (32x32x3 -> 32, 16x16x32 -> 32, 8x8x32 -> 64)
times the forward pass and the forward + backward pass (gradients of input and kernel) of
`jax.lax.conv_general_dilated` under jit (NHWC, the layout of the models) and of PyTorch's
`conv2d` (NCHW, its native layout), best of `--repeats`, in alternating rounds. Prints the
ratio JAX / PyTorch speed per layer (> 1: JAX is faster). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
from timing import best_seconds

LAYERS = ((32, 3, 32), (16, 32, 32), (8, 32, 64))  # (spatial size, in channels, out channels)


def jax_functions(x: np.ndarray, w: np.ndarray):
  def conv(x, w):
    return jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )

  forward = jax.jit(conv)
  backward = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=(0, 1)))
  x, w = jnp.asarray(x), jnp.asarray(w)
  return (
    lambda: forward(x, w).block_until_ready(),
    lambda: jax.block_until_ready(backward(x, w)),
  )


def torch_functions(x: np.ndarray, w: np.ndarray):
  import torch

  x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
  w = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous().requires_grad_(True)

  def forward():
    with torch.no_grad():
      torch.nn.functional.conv2d(x, w, padding=2)

  def backward():
    x.grad = w.grad = None
    (torch.nn.functional.conv2d(x, w, padding=2) ** 2).sum().backward()

  return forward, backward


def _repeat(function):
  def run(times):
    for _ in range(times):
      function()

  return run


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()
  has_torch = importlib.util.find_spec("torch") is not None
  rng = np.random.default_rng(0)
  summary = {"backend": jax.default_backend(), "batch": args.batch}
  for size, channels_in, channels_out in LAYERS:
    x = rng.standard_normal((args.batch, size, size, channels_in), dtype=np.float32)
    w = rng.standard_normal((5, 5, channels_in, channels_out), dtype=np.float32) * 0.1
    contestants = {"jax": jax_functions(x, w)}
    if has_torch:
      contestants["torch"] = torch_functions(x, w)
    label = f"{size}x{size}x{channels_in}->{channels_out}"
    for k, part in enumerate(("forward", "forward+backward")):
      runners = {name: _repeat(functions[k]) for name, functions in contestants.items()}
      seconds = best_seconds(runners, 1, args.repeats, warmup=1)
      line = f"{label:>16} {part:>16}: JAX {1e3 * seconds['jax']:7.1f} ms"
      if has_torch:
        ratio = seconds["torch"] / seconds["jax"]
        line += f", PyTorch {1e3 * seconds['torch']:7.1f} ms, JAX / PyTorch speed {ratio:.2f}x"
        summary[f"{label}/{part}/jax_over_torch"] = round(ratio, 3)
      summary[f"{label}/{part}/jax_ms"] = round(1e3 * seconds["jax"], 2)
      print(line)
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
