import chex
import jax
import numpy as np
import pytest
from conftest import load_config

from hashing import models
from hashing.errors import UserError


def count_params(params):
  return sum(x.size for x in jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize(
  "shape, bits, expected",
  [
    # conv 5*5*3*32+32, 5*5*32*32+32, 5*5*32*64+64, FC (4*4*64)*500+500, FC 500*48+48
    ((32, 32, 3), 48, 2432 + 25632 + 51264 + 512500 + 24048),
    # 28x28 grey: 28 -> 14 -> 7 -> 4 after the three 3/2 'SAME' pools
    ((28, 28, 1), 12, 832 + 25632 + 51264 + 512500 + 6012),
  ],
)
def test_dsh_net_parameter_count_and_output_shape(shape, bits, expected):
  config = load_config("dsh", f"bits={bits}")
  model = models.build_model(config.model, [127.0] * shape[-1], [64.0] * shape[-1])
  images = np.random.default_rng(0).integers(0, 256, (5, *shape), dtype=np.uint8)
  params = model.init(jax.random.key(0), images)
  assert count_params(params) == expected
  codes = model.apply(params, images)
  chex.assert_shape(codes, (5, bits))
  chex.assert_type(codes, np.float32)


def test_model_same_under_jit_and_without():
  config = load_config("dsh", "bits=16")
  model = models.build_model(config.model)
  images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
  params = model.init(jax.random.key(0), images)
  chex.assert_trees_all_close(
    jax.jit(model.apply)(params, images), model.apply(params, images), rtol=1e-5, atol=1e-5
  )


@pytest.mark.parametrize("output, low, high", [("sigmoid", 0.0, 1.0), ("tanh", -1.0, 1.0)])
def test_output_activation_bounds(output, low, high):
  config = load_config("dsh", "bits=8")
  config.model.output = output
  model = models.build_model(config.model)
  images = np.random.default_rng(2).integers(0, 256, (4, 16, 16, 1), dtype=np.uint8)
  codes = model.apply(model.init(jax.random.key(0), images), images)
  assert codes.min() >= low and codes.max() <= high


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("backbone", "resnet", "backbone"),
    ("head", "magic", "head"),
    ("bits", 0, "positive"),
    ("output", "relu", "output"),
  ],
)
def test_bad_model_config_is_a_user_error(field, value, message):
  config = load_config("dsh", "bits=8")
  config.model[field] = value
  with pytest.raises(UserError, match=message):
    models.build_model(config.model)
