"""`compiling.jit` compiles with the per-backend options, and they take effect."""

import jax
import jax.numpy as jnp

from hashing import compiling


def conv(x, w):
  return jax.lax.conv_general_dilated(
    x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def test_cpu_convolutions_stay_with_xla_and_give_the_same_result():
  assert jax.default_backend() == "cpu"
  assert compiling.compiler_options() == compiling.CPU_COMPILER_OPTIONS
  x = jax.random.normal(jax.random.key(0), (8, 16, 16, 3))
  w = jax.random.normal(jax.random.key(1), (5, 5, 3, 8))
  ours = compiling.jit(conv)
  # XLA's default hands the convolution to a YNNPACK fusion; the project's options do not.
  assert "__ynn_fusion" not in ours.lower(x, w).compile().as_text()
  assert jnp.allclose(ours(x, w), jax.jit(conv)(x, w), atol=1e-4)
