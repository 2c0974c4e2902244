"""`pooling.max_pool` and `pooling.avg_pool` against the library's pools: the same values and
the same gradient (for the maximum: which input of a window receives it, ties included), for
the geometries the models use and odd ones."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hashing.pooling import avg_pool, max_pool

GEOMETRIES = [
  ((4, 32, 32, 5), 3, 2),  # the DSH net's and NIN's pools
  ((4, 16, 16, 5), 3, 2),
  ((4, 8, 8, 5), 3, 2),
  ((3, 15, 17, 2), 3, 2),  # odd sizes: 'SAME' pads on both sides
  ((2, 8, 8, 3), 2, 2),  # VGG's pools
  ((2, 7, 9, 3), 2, 2),
  ((2, 16, 16, 4), 3, 1),  # overlapping, stride 1
  ((2, 10, 10, 2), 5, 3),
]


def reference(x, window, stride):
  return nn.max_pool(x, (window, window), (stride, stride), padding="SAME")


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("shape, window, stride", GEOMETRIES)
def test_values_and_gradient_equal_the_library_max_pool(shape, window, stride, tied):
  rng = np.random.default_rng(0)
  x = rng.standard_normal(shape).astype(np.float32)
  if tied:  # ReLU'd small integers: most windows hold several equal maxima
    x = np.maximum(np.round(x), 0)
  x = jnp.asarray(x)
  expected = reference(x, window, stride)
  chex.assert_trees_all_equal(max_pool(x, window, stride), expected)
  weights = jnp.asarray(rng.standard_normal(expected.shape).astype(np.float32))
  grad = jax.jit(jax.grad(lambda x: jnp.sum(max_pool(x, window, stride) * weights)))(x)
  grad_ref = jax.grad(lambda x: jnp.sum(reference(x, window, stride) * weights))(x)
  # Which input gets each share is exact; overlapping windows add shares in another order.
  chex.assert_trees_all_close(grad, grad_ref, atol=1e-6, rtol=0)
  np.testing.assert_array_equal(np.asarray(grad) != 0, np.asarray(grad_ref) != 0)


def test_bfloat16_and_vmap():
  x = jnp.asarray(np.random.default_rng(1).random((2, 3, 9, 9, 4)), jnp.bfloat16)
  out = jax.vmap(lambda x: max_pool(x, 3, 2))(x)
  assert out.dtype == jnp.bfloat16 and out.shape == (2, 3, 5, 5, 4)
  chex.assert_trees_all_equal(out, jax.vmap(lambda x: reference(x, 3, 2))(x))
  grad = jax.grad(lambda x: jnp.sum(max_pool(x, 3, 2).astype(jnp.float32)))(x[0])
  assert grad.dtype == jnp.bfloat16 and float(grad.astype(jnp.float32).sum()) == 3 * 5 * 5 * 4


@pytest.mark.parametrize("shape, window, stride", GEOMETRIES)
def test_values_and_gradient_equal_the_library_average_pool(shape, window, stride):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
  expected = nn.avg_pool(x, (window, window), (stride, stride), padding="SAME")
  chex.assert_trees_all_close(avg_pool(x, window, stride), expected, atol=1e-6, rtol=0)
  weights = jnp.asarray(rng.standard_normal(expected.shape).astype(np.float32))
  grad = jax.jit(jax.grad(lambda x: jnp.sum(avg_pool(x, window, stride) * weights)))(x)
  grad_ref = jax.grad(
    lambda x: jnp.sum(nn.avg_pool(x, (window, window), (stride, stride), "SAME") * weights)
  )(x)
  chex.assert_trees_all_close(grad, grad_ref, atol=1e-6, rtol=0)
