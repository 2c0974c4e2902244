"""Where the train step's time goes: each convolution and the first max and average pool of the
DSH net alone, JAX (the project's compile options, and XLA's defaults) vs PyTorch.

  python benchmarks/conv_layers.py [--batch 128] [--repeats 10]

For each 5x5 'SAME' convolution of the DSH net (32x32x3 -> 32, 16x16x32 -> 32, 8x8x32 -> 64)
times the three passes a train step runs, each alone: the forward pass, the kernel gradient and
the input gradient (both from a fixed output gradient; the train step needs no input gradient of
the first layer, whose input is the images), of `jax.lax.conv_general_dilated` under
`hashing.compiling.jit` (NHWC, the layout of the models), under plain `jax.jit` (XLA's default
options: on CPU the convolution goes to a YNNPACK fusion) and PyTorch's `conv2d` (NCHW, its
native layout); then the narrow NIN's 1 x 1 convolutions (32x32x32, 16x16x64, 8x8x96, in =
out), forward + both gradients: `hashing.models.convolve` (a matrix product) vs
`jax.lax.conv_general_dilated` vs PyTorch; then the DSH net's first max pool (3x3, stride 2,
128 x 32 x 32 x 32) forward + backward: `hashing.pooling.max_pool` vs `flax.linen.max_pool`
(XLA's select-and-scatter gradient) vs PyTorch's `max_pool2d`, and its first average pool (3x3,
stride 2, 128 x 16 x 16 x 32): `hashing.pooling.avg_pool` vs `flax.linen.avg_pool` vs
PyTorch's `avg_pool2d`. Best of `--repeats`, in alternating rounds. Prints each time and the
ratio of each JAX variant's speed to PyTorch's (> 1: JAX is faster). The last line is one JSON
object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from timing import best_seconds

from hashing import compiling, models, pooling  # noqa: E402 (timing put the project on sys.path)

LAYERS = ((32, 3, 32), (16, 32, 32), (8, 32, 64))  # (spatial size, in channels, out channels)
# The narrow NIN's 1 x 1 convolutions before its 4 x 4 features: (spatial size, in = out).
ONE_BY_ONE = ((32, 32), (16, 64), (8, 96))


def lax_conv(x, w):
  """XLA's own 'SAME' convolution, NHWC input, HWIO kernel."""
  return jax.lax.conv_general_dilated(
    x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def jax_functions(x: np.ndarray, w: np.ndarray, g: np.ndarray, jit=compiling.jit):
  """(forward, kernel gradient, input gradient) of the convolution; `g` is the output gradient."""
  forward = jit(lax_conv)
  kernel_gradient = jit(lambda x, w, g: jax.vjp(lambda w: lax_conv(x, w), w)[1](g)[0])
  input_gradient = jit(lambda x, w, g: jax.vjp(lambda x: lax_conv(x, w), x)[1](g)[0])
  x, w, g = jnp.asarray(x), jnp.asarray(w), jnp.asarray(g)
  return (
    lambda: forward(x, w).block_until_ready(),
    lambda: kernel_gradient(x, w, g).block_until_ready(),
    lambda: input_gradient(x, w, g).block_until_ready(),
  )


def torch_functions(x: np.ndarray, w: np.ndarray, g: np.ndarray):
  import torch

  x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
  w = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous()
  g = torch.from_numpy(g).permute(0, 3, 1, 2).contiguous()

  def forward():
    with torch.no_grad():
      torch.nn.functional.conv2d(x, w, padding=2)

  return (
    forward,
    lambda: torch.nn.grad.conv2d_weight(x, w.shape, g, padding=2),
    lambda: torch.nn.grad.conv2d_input(x.shape, w, g, padding=2),
  )


def one_by_one_functions(x: np.ndarray, w: np.ndarray, g: np.ndarray, has_torch: bool) -> dict:
  """Forward + both gradients (input and kernel, from the output gradient `g`) of a 1 x 1
  convolution: `models.convolve` (a matrix product), `lax.conv_general_dilated`, PyTorch."""
  x_jax, w_jax, g_jax = jnp.asarray(x), jnp.asarray(w), jnp.asarray(g)

  def jax_backward(conv):
    backward = compiling.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g))
    return lambda: jax.block_until_ready(backward(x_jax, w_jax, g_jax))

  functions = {"jax": jax_backward(models.convolve), "jax-lax-conv": jax_backward(lax_conv)}
  if has_torch:
    import torch

    x_torch = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
    w_torch = torch.from_numpy(w).permute(3, 2, 0, 1).contiguous().requires_grad_(True)
    g_torch = torch.from_numpy(g).permute(0, 3, 1, 2).contiguous()

    def torch_backward():
      x_torch.grad = w_torch.grad = None
      torch.nn.functional.conv2d(x_torch, w_torch).backward(g_torch)

    functions["torch"] = torch_backward
  return functions


def pool_functions(x: np.ndarray, kind: str, has_torch: bool) -> dict:
  """Forward + backward of the 3x3 / 2 pool of `kind` ("max" or "avg") per contestant."""
  x_jax = jnp.asarray(x)

  def jax_pool(pool):
    backward = compiling.jit(jax.grad(lambda x: jnp.sum(pool(x) ** 2)))
    return lambda: backward(x_jax).block_until_ready()

  ours, flax_pool = {
    "max": (pooling.max_pool, nn.max_pool),
    "avg": (pooling.avg_pool, nn.avg_pool),
  }[kind]
  functions = {
    "jax": jax_pool(lambda x: ours(x, 3, 2)),
    "jax-flax-pool": jax_pool(lambda x: flax_pool(x, (3, 3), (2, 2), "SAME")),
  }
  if has_torch:
    import torch

    x_torch = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous().requires_grad_(True)

    torch_pool = {"max": torch.nn.functional.max_pool2d, "avg": torch.nn.functional.avg_pool2d}[
      kind
    ]

    def torch_backward():
      x_torch.grad = None
      (torch_pool(x_torch, 3, 2, padding=1) ** 2).sum().backward()

    functions["torch"] = torch_backward
  return functions


def _repeat(function):
  def run(times):
    for _ in range(times):
      function()

  return run


def _report(label: str, seconds: dict, summary: dict) -> None:
  """One line: each contestant's time, and each JAX variant's speed relative to PyTorch."""
  line = f"{label:>34}: " + ", ".join(f"{n} {1e3 * t:6.1f} ms" for n, t in seconds.items())
  for name, value in seconds.items():
    summary[f"{label}/{name}_ms"] = round(1e3 * value, 2)
    if "torch" in seconds and name != "torch":
      ratio = seconds["torch"] / value
      summary[f"{label}/{name}_over_torch"] = round(ratio, 3)
      line += f"; {name} / PyTorch speed {ratio:.2f}x"
  print(line)


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
    g = rng.standard_normal((args.batch, size, size, channels_out), dtype=np.float32)
    contestants = {
      "jax": jax_functions(x, w, g),
      "jax-xla-defaults": jax_functions(x, w, g, jit=jax.jit),
    }
    if has_torch:
      contestants["torch"] = torch_functions(x, w, g)
    for k, part in enumerate(("forward", "kernel gradient", "input gradient")):
      runners = {name: _repeat(functions[k]) for name, functions in contestants.items()}
      seconds = best_seconds(runners, 1, args.repeats, warmup=1)
      _report(f"conv {size}x{size}x{channels_in}->{channels_out} {part}", seconds, summary)
  for size, channels in ONE_BY_ONE:
    x = rng.standard_normal((args.batch, size, size, channels), dtype=np.float32)
    w = rng.standard_normal((1, 1, channels, channels), dtype=np.float32) * 0.1
    g = rng.standard_normal((args.batch, size, size, channels), dtype=np.float32)
    functions = one_by_one_functions(x, w, g, has_torch)
    seconds = best_seconds({n: _repeat(f) for n, f in functions.items()}, 1, args.repeats, warmup=1)
    _report(f"1x1 conv {size}x{size}x{channels} forward+backward", seconds, summary)
  for kind, size in (("max", 32), ("avg", 16)):
    x = rng.standard_normal((args.batch, size, size, 32), dtype=np.float32)
    runners = {name: _repeat(f) for name, f in pool_functions(x, kind, has_torch).items()}
    seconds = best_seconds(runners, 1, args.repeats, warmup=1)
    _report(f"{kind}-pool 3/2 {size}x{size}x32 forward+backward", seconds, summary)
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
