import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
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


@pytest.mark.parametrize("backbone", ["vgg11", "vgg11-narrow"])
def test_vgg_parameter_count_and_output_shape(backbone):
  config = load_config("dsh", f"bits=48,backbone={backbone}")
  model = models.build_model(config.model)
  images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
  params = model.init(jax.random.key(0), images)
  scale = {"vgg11": 1, "vgg11-narrow": 4}[backbone]  # the narrow net: a quarter of the width
  widths = [(3, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512),
            (512, 512)]  # fmt: skip
  widths = [(cin if cin == 3 else cin // scale, cout // scale) for cin, cout in widths]
  convs = sum(9 * cin * cout + 2 * cout for cin, cout in widths)  # no bias; norm scale + shift
  assert count_params(params) == convs + (512 // scale * 512 + 512) + (512 * 48 + 48)
  codes = model.apply(params, images)
  chex.assert_shape(codes, (2, 48))
  # Group normalisation, not batch: an image's code does not depend on the rest of the batch.
  chex.assert_trees_all_close(model.apply(params, images[:1]), codes[:1], rtol=1e-5, atol=1e-5)


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
    ("dtype", "float16", "dtype"),
    ("dropout", 1.0, "dropout"),
    ("quantize_gradient", "sign", "quantize_gradient"),
    ("class_input", "logits", "class_input"),
  ],
)
def test_bad_model_config_is_a_user_error(field, value, message):
  config = load_config("dsh", "bits=8")
  config.model[field] = value
  with pytest.raises(UserError, match=message):
    models.build_model(config.model)


def nin_narrow_param_count(channels, bits, per_bit):
  w0, w1, w2, w3 = models.NIN_WIDTHS["nin-narrow"]
  conv = lambda k, cin, cout: k * k * cin * cout + cout
  features = per_bit * bits
  backbone = (
    conv(5, channels, w0) + conv(1, w0, w0) + conv(5, w0, w1) + conv(1, w1, w1)
    + conv(1, w1, w2) + conv(1, w2, w2) + conv(3, w2, w3) + conv(1, w3, features)
  )  # fmt: skip
  return backbone + features + bits  # divide-and-encode: one weight per feature, one bias per bit


@pytest.mark.parametrize("shape, bits", [((28, 28, 1), 12), ((32, 32, 3), 48)])
def test_nin_divide_and_encode_parameter_count_and_output(shape, bits):
  config = load_config("dnnh", f"bits={bits}")
  model = models.build_model(config.model)
  images = np.random.default_rng(0).integers(0, 256, (4, *shape), dtype=np.uint8)
  params = model.init(jax.random.key(0), images)
  assert count_params(params) == nin_narrow_param_count(shape[-1], bits, 16)
  codes = model.apply(params, images)
  chex.assert_shape(codes, (4, bits))
  assert codes.min() >= 0 and codes.max() <= 1  # sigmoid output


def test_divide_and_encode_bit_depends_only_on_its_slice():
  head = models.DivideAndEncodeHead(bits=4)
  features = np.random.default_rng(0).normal(size=(1, 12)).astype(np.float32)
  params = head.init(jax.random.key(0), features)
  jacobian = jax.jacobian(lambda f: head.apply(params, f)[0])(features)[:, 0, :]  # [4, 12]
  block = np.kron(np.eye(4), np.ones((1, 3))).astype(bool)  # bit k <-> features 3k..3k+2
  assert np.all(jacobian[~block] == 0) and np.all(jacobian[block] != 0)


def test_divide_and_encode_width_that_does_not_divide_is_a_user_error():
  config = load_config("dnnh", "bits=12,backbone=dsh")
  config.model.features_per_bit = 0  # the DSH net's own 500 features: 500 / 12 slices
  with pytest.raises(UserError, match="does not divide"):
    models.build_model(config.model)
  config.model.features_per_bit = 10
  models.build_model(config.model)  # 120 features: fine


@pytest.mark.parametrize("mode", models.TRIPLET_APPLY)
def test_triplet_apply_modes_equal_three_separate_applies(mode):
  config = load_config("dnnh", "bits=8")
  model = models.build_model(config.model, [120.0], [60.0])
  images = np.random.default_rng(3).integers(0, 256, (3, 5, 16, 16, 1), dtype=np.uint8)
  params = model.init(jax.random.key(0), images[0])
  expected = np.stack([model.apply(params, images[i]) for i in range(3)])
  apply = jax.jit(lambda p, x: models.apply_triplets(model, p, x, mode=mode))
  chex.assert_trees_all_close(apply(params, images), expected, rtol=1e-5, atol=1e-6)


def test_dropout_in_training_only_and_unbiased():
  config = load_config("dsh", "bits=8")
  plain = models.build_model(config.model, [120.0], [60.0])
  config.model.dropout = 0.5
  model = models.build_model(config.model, [120.0], [60.0])
  images = np.random.default_rng(5).integers(0, 256, (4, 16, 16, 1), dtype=np.uint8)
  params = model.init(jax.random.key(0), images)  # dropout adds no parameters
  test_codes = model.apply(params, images)
  chex.assert_trees_all_close(test_codes, plain.apply(params, images))

  @jax.jit
  @jax.vmap
  def train_codes(key):
    return model.apply(params, images, train=True, rngs={"dropout": key})

  codes = train_codes(jax.random.split(jax.random.key(1), 4000))
  assert not np.allclose(codes[0], codes[1])  # a new mask per key
  # Inverted dropout keeps the expected features; the FC head and linear output are linear, so
  # the mean code over masks is the test-time code (standard error ~ 0.02 here).
  scale = float(jnp.abs(test_codes).mean())
  np.testing.assert_allclose(codes.mean(0), test_codes, atol=0.1 * scale)
  with pytest.raises(Exception, match="dropout"):  # training without a key: flax says which
    model.apply(params, images, train=True)


@pytest.mark.parametrize("name, arg", [("dsh", "bits=8"), ("cnnh", "cnnh+,bits=8")])
def test_flip_average_is_the_mean_of_both_views_at_test_time_only(name, arg):
  config = load_config(name, arg)
  plain = models.build_model(config.model, [120.0], [60.0], num_classes=3)
  config.model.flip_average = True
  model = models.build_model(config.model, [120.0], [60.0], num_classes=3)
  images = np.random.default_rng(6).integers(0, 256, (4, 16, 16, 1), dtype=np.uint8)
  mirrored = images[:, :, ::-1]
  params = model.init(jax.random.key(0), images)
  both = [plain.apply(params, x, with_logits=True) for x in (images, mirrored)]
  expected = jax.tree_util.tree_map(lambda a, b: (a + b) / 2, *both)
  chex.assert_trees_all_close(model.apply(params, images, with_logits=True), expected, atol=1e-6)
  # A mirrored image gets the same code; training sees one view, as without the option.
  chex.assert_trees_all_close(model.apply(params, mirrored), model.apply(params, images))
  chex.assert_trees_all_close(
    model.apply(params, images, train=True), plain.apply(params, images, train=True)
  )


def test_class_output_on_codes_is_a_dense_layer_on_the_output_codes():
  config = load_config("dnnh", "bits=8")
  config.model.class_input = "codes"
  model = models.build_model(config.model, [120.0], [60.0], num_classes=3)
  images = np.random.default_rng(7).integers(0, 256, (4, 16, 16, 1), dtype=np.uint8)
  params = model.init(jax.random.key(0), images)
  codes, logits = model.apply(params, images, with_logits=True)
  dense = params["params"]["classes"]
  assert dense["kernel"].shape == (8, 3)  # [bits, classes]: it reads the codes, not features
  np.testing.assert_allclose(logits, codes @ dense["kernel"] + dense["bias"], atol=1e-5)


def test_piecewise_threshold_values_gradient_and_use_in_training_only():
  s = jnp.array([0.1, 0.45, 0.5, 0.55, 0.9])
  np.testing.assert_allclose(models.piecewise_threshold(s, 0.1), [0.0, 0.45, 0.5, 0.55, 1.0])
  grad = jax.grad(lambda x: models.piecewise_threshold(x, 0.1).sum())(s)
  np.testing.assert_array_equal(grad, [0, 1, 1, 1, 0])
  straight = lambda x: models.piecewise_threshold(x, 0.1, "straight_through")
  np.testing.assert_allclose(straight(s), [0.0, 0.45, 0.5, 0.55, 1.0])
  np.testing.assert_array_equal(jax.grad(lambda x: straight(x).sum())(s), [1, 1, 1, 1, 1])
  config = load_config("dnnh", "bits=8")
  config.model.quantize_eps = 0.2
  model = models.build_model(config.model, [120.0], [60.0])
  images = np.random.default_rng(4).integers(0, 256, (6, 16, 16, 1), dtype=np.uint8)
  params = model.init(jax.random.key(0), images)
  test_codes = model.apply(params, images)
  np.testing.assert_allclose(
    model.apply(params, images, train=True), models.piecewise_threshold(test_codes, 0.2)
  )
  # encode centres on the 0.5 threshold: a bit is set where the encoded value is > 0.
  np.testing.assert_allclose(models.encode(model, params, images, 4), test_codes - 0.5, atol=1e-6)


@pytest.mark.parametrize("name, arg", [("dsh", "bits=16"), ("dnnh", "bits=16")])
def test_bfloat16_compute_keeps_float32_parameters_and_outputs_close_to_float32(name, arg):
  config = load_config(name, arg)
  images = np.random.default_rng(5).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
  model32 = models.build_model(config.model, [120.0] * 3, [60.0] * 3)
  params = model32.init(jax.random.key(0), images)
  config.model.dtype = "bfloat16"
  model16 = models.build_model(config.model, [120.0] * 3, [60.0] * 3)
  chex.assert_trees_all_equal_shapes_and_dtypes(model16.init(jax.random.key(0), images), params)
  assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype(np.float32)}
  codes32, codes16 = model32.apply(params, images), model16.apply(params, images)
  assert codes16.dtype == np.float32
  scale = np.abs(codes32).max()
  np.testing.assert_allclose(codes16, codes32, atol=0.05 * scale)
  assert not np.array_equal(codes16, codes32)  # it did compute in bfloat16


class PlainDSH(nn.Module):
  """The DSH net written layer by layer with flax's own layers (the reference)."""

  @nn.compact
  def __call__(self, x):
    pool = dict(window_shape=(3, 3), strides=(2, 2), padding="SAME")
    x = nn.relu(nn.max_pool(nn.Conv(32, (5, 5), padding="SAME")(x), **pool))
    x = nn.avg_pool(nn.relu(nn.Conv(32, (5, 5), padding="SAME")(x)), **pool)
    x = nn.avg_pool(nn.relu(nn.Conv(64, (5, 5), padding="SAME")(x)), **pool)
    return nn.relu(nn.Dense(500)(x.reshape((x.shape[0], -1))))


class PlainNIN(nn.Module):
  widths: tuple

  @nn.compact
  def __call__(self, x):
    pool = dict(window_shape=(3, 3), strides=(2, 2), padding="SAME")
    w0, w1, w2, w3 = self.widths

    def conv(x, width, size):
      return nn.relu(nn.Conv(width, (size, size), padding="SAME")(x))

    x = nn.max_pool(conv(conv(x, w0, 5), w0, 1), **pool)
    x = nn.max_pool(conv(conv(x, w1, 5), w1, 1), **pool)
    x = nn.avg_pool(conv(conv(x, w2, 1), w2, 1), **pool)
    return jnp.mean(conv(conv(x, w3, 3), 40, 1), axis=(1, 2))


@pytest.mark.parametrize(
  "ours, plain",
  [
    (models.DSHBackbone(), PlainDSH()),
    (
      models.NINBackbone(models.NIN_WIDTHS["nin-narrow"], 40),
      PlainNIN(models.NIN_WIDTHS["nin-narrow"]),
    ),
  ],
  ids=["dsh", "nin-narrow"],
)
def test_backbones_equal_their_plain_layer_by_layer_definition(ours, plain):
  """The bias and ReLU moved after the max pool, and the project's pools: the same parameters
  (names, shapes, initial values), features and gradients as flax's layers in the papers' order."""
  x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 32, 32, 3)), jnp.float32)
  params = ours.init(jax.random.key(0), x)
  chex.assert_trees_all_equal(params, plain.init(jax.random.key(0), x))
  # A random bias, so that moving it past the pool is exercised (they start at zero).
  params = jax.tree_util.tree_map_with_path(
    lambda path, p: p + 0.1 if path[-1].key == "bias" else p, params
  )
  chex.assert_trees_all_close(ours.apply(params, x), plain.apply(params, x), atol=1e-5, rtol=1e-5)
  loss = lambda net: lambda p: jnp.sum(jnp.sin(net.apply(p, x)))  # noqa: E731
  chex.assert_trees_all_close(
    jax.grad(loss(ours))(params), jax.grad(loss(plain))(params), atol=1e-4, rtol=1e-4
  )
