"""`jax.jit` with the XLA compiler options this project measured faster on each backend.

On CPU, XLA (jaxlib 0.10) hands convolutions to YNNPACK by default, which ran them on one
thread here: each 5x5 convolution of the DSH net took as long with one core as with two,
and disabling the YNNPACK fusions let XLA's Eigen convolutions use every core (the first
layer's forward pass went from 30 to 12 ms per batch of 128 on 2 cores; whole DSH train
steps from about 680 to 920 images/s; `benchmarks/conv_layers.py`,
`benchmarks/train_throughput.py`). Other backends compile with XLA's defaults.
"""

from __future__ import annotations

import jax

CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}  # "": no YNNPACK fusions


def compiler_options() -> dict[str, str] | None:
  """The options for the default backend (None: XLA's defaults)."""
  return dict(CPU_COMPILER_OPTIONS) if jax.default_backend() == "cpu" else None


def jit(fun, **kwargs):
  """`jax.jit(fun, **kwargs)` compiled with `compiler_options()` unless the caller gives some."""
  kwargs.setdefault("compiler_options", compiler_options())
  return jax.jit(fun, **kwargs)
