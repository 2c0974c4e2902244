"""Max and average pooling with gradients that XLA:CPU runs fast, equal to flax.linen's.

XLA differentiates the library's reduce-window pools with a select-and-scatter (maximum) or a
reduce-window over a dilated gradient (sum), which on CPU measured several times slower than
the forward pass (the DSH net's first max pool, 128 x 32 x 32 x 32: 67 ms forward + backward
against 10 ms here; its first average pool, 128 x 16 x 16 x 32: 7.5 ms against 2.3 ms;
`benchmarks/conv_layers.py`). The forward pass stays XLA's reduce-window; the
backward pass pads the input to a grid of whole strides and views it as `[B, Gh, s, Gw, s, C]`
(a free reshape), where window offset (dy, dx) is the plain slice
`[:, dy//s : dy//s + out_h, dy%s, dx//s : dx//s + out_w, dx%s]`; each offset's share of the
output gradient goes back into its stride phase with a pad. For the maximum, ties go to the
first maximal offset in row-major order, as XLA's select-and-scatter does: the same inputs
receive the same gradient as with `flax.linen.max_pool(x, (k, k), (s, s), "SAME")` (where
windows overlap, their shares are added in another order: equal up to float rounding).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _geometry(size: int, window: int, stride: int) -> tuple[int, int, int]:
  """(output size, padding before, padded grid size) of one spatial axis under 'SAME'."""
  out = -(-size // stride)
  pad = max((out - 1) * stride + window - size, 0)
  # A grid of whole strides that holds every window: out + (window - 1) // stride phase rows.
  return out, pad // 2, stride * (out + (window - 1) // stride)


def _phase_grid(x: jnp.ndarray, window: int, stride: int):
  """x `[B, H, W, C]` padded with -inf and viewed as `[B, Gh, s, Gw, s, C]`; like lax's
  'SAME', the smaller half of the padding goes before."""
  _, height, width, channels = x.shape
  _, before_h, grid_h = _geometry(height, window, stride)
  _, before_w, grid_w = _geometry(width, window, stride)
  padded = jnp.pad(
    x,
    (
      (0, 0),
      (before_h, grid_h - height - before_h),
      (before_w, grid_w - width - before_w),
      (0, 0),
    ),
    constant_values=-jnp.inf,
  )
  return padded.reshape(x.shape[0], grid_h // stride, stride, grid_w // stride, stride, channels)


def _offsets(window: int):
  return [(dy, dx) for dy in range(window) for dx in range(window)]


def _window_slice(grid, dy, dx, stride, out_h, out_w):
  return grid[
    :,
    dy // stride : dy // stride + out_h,
    dy % stride,
    dx // stride : dx // stride + out_w,
    dx % stride,
  ]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool(x: jnp.ndarray, window: int, stride: int) -> jnp.ndarray:
  """Max pooling `[B, H, W, C]` -> `[B, ceil(H/stride), ceil(W/stride), C]`, 'SAME' padding,
  a `window` x `window` window every `stride` pixels."""
  return _forward(x, window, stride)[0]


def _forward(x, window, stride):
  # Values from XLA's reduce-window, which is fast forward; only its gradient is replaced.
  out = jax.lax.reduce_window(
    x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1), "SAME"
  )
  return out, (x, out)


def _backward(window, stride, residuals, out_grad):
  x, out = residuals
  grid = _phase_grid(x, window, stride)
  out_h, out_w = out.shape[1:3]
  shares = {}
  taken = jnp.zeros(out.shape, bool)
  for dy, dx in _offsets(window):
    # The first offset (row-major) that holds a window's maximum takes its whole gradient.
    hit = (_window_slice(grid, dy, dx, stride, out_h, out_w) == out) & ~taken
    taken = taken | hit
    shares[dy, dx] = jnp.where(hit, out_grad, 0)
  return (_input_gradient(shares, x.shape, window, stride),)


def _input_gradient(shares: dict, shape, window: int, stride: int) -> jnp.ndarray:
  """The gradient `[B, H, W, C]` of a pool's input from each window offset's share
  `[B, out_h, out_w, C]` of the output gradient: every share padded into place in its stride
  phase of the grid, the phases interleaved, the padding cut off."""
  first = next(iter(shares.values()))
  out_h, out_w = first.shape[1:3]
  _, before_h, grid_h = _geometry(shape[1], window, stride)
  _, before_w, grid_w = _geometry(shape[2], window, stride)
  phases_h, phases_w = grid_h // stride, grid_w // stride
  phase_grads = {}
  for (dy, dx), share in shares.items():
    shift_h, shift_w = dy // stride, dx // stride
    placed = jnp.pad(
      share,
      (
        (0, 0),
        (shift_h, phases_h - out_h - shift_h),
        (shift_w, phases_w - out_w - shift_w),
        (0, 0),
      ),
    )
    phase = (dy % stride, dx % stride)
    phase_grads[phase] = phase_grads[phase] + placed if phase in phase_grads else placed
  zeros = jnp.zeros((shape[0], phases_h, phases_w, shape[3]), first.dtype)
  rows = [
    jnp.stack([phase_grads.get((py, px), zeros) for px in range(stride)], axis=3)
    for py in range(stride)
  ]
  grid_grad = jnp.stack(rows, axis=2).reshape(shape[0], grid_h, grid_w, shape[3])
  return grid_grad[:, before_h : before_h + shape[1], before_w : before_w + shape[2]]


max_pool.defvjp(_forward, _backward)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def avg_pool(x: jnp.ndarray, window: int, stride: int) -> jnp.ndarray:
  """Average pooling `[B, H, W, C]` -> `[B, ceil(H/stride), ceil(W/stride), C]`, 'SAME'
  padding, the sum of each `window` x `window` window divided by window^2 (padding counts as
  zeros, as in `flax.linen.avg_pool(x, (k, k), (s, s), "SAME")`)."""
  return _avg_forward(x, window, stride)[0]


def _avg_forward(x, window, stride):
  total = jax.lax.reduce_window(
    x, jnp.zeros((), x.dtype), jax.lax.add, (1, window, window, 1), (1, stride, stride, 1), "SAME"
  )
  return total / (window * window), x.shape


def _avg_backward(window, stride, shape, out_grad):
  share = out_grad / (window * window)  # every input of a window gets the same share
  return (_input_gradient(dict.fromkeys(_offsets(window), share), shape, window, stride),)


avg_pool.defvjp(_avg_forward, _avg_backward)
