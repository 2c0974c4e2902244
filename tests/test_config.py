import pytest
from conftest import load_config

from hashing import config_args
from hashing.errors import UserError


def test_default_dsh_config_trains_four_bit_lengths_on_embedded_data():
  c = load_config("dsh")
  assert (c.method, c.data.source, c.data.protocol) == ("dsh", "embedded", "fashion-mnist-embedded")
  assert c.bit_lengths == (12, 24, 32, 48)
  assert c.loss.margin is None and c.loss.alpha == 0.01  # None: margin = 2 * bits


@pytest.mark.parametrize(
  "arg, source, protocol, database",
  [
    ("data=cifar10-dnnh,bits=48", "npz:cifar10", "cifar10-dnnh", None),
    ("data=cifar10-dsh", "npz:cifar10", "cifar10-dsh", None),
    ("data=cifar10-dsh,database=query", "npz:cifar10", "cifar10-dsh", "query"),
    ("data=fashion-mnist", "idx:/usr/share/datasets/fashion-mnist", "per-class", None),
  ],
)
def test_data_presets(arg, source, protocol, database):
  c = load_config("dsh", arg)
  assert (c.data.source, c.data.protocol, c.data.database) == (source, protocol, database)


def test_single_bit_length_and_smoke():
  c = load_config("dsh", "bits=48,smoke")
  assert (c.model.bits, c.bit_lengths) == (48, ())
  assert c.train.steps == 20 and c.data.database_limit > 0


def test_shared_field_names():
  c = load_config("dsh", "smoke")
  for field in (
    "method",
    "seed",
    "data.source",
    "data.protocol",
    "model.bits",
    "model.backbone",
    "model.head",
    "loss.margin",
    "loss.alpha",
    "train.epochs",
    "train.batch_size",
    "train.learning_rate",
  ):
    node = c
    for part in field.split("."):
      node = node[part]


@pytest.mark.parametrize(
  "arg, message",
  [("colour=red", "unknown config argument"), ("bits=12/x", "integers"), ("data=mars", "unknown")],
)
def test_bad_arguments_are_user_errors(arg, message):
  with pytest.raises(UserError, match=message):
    load_config("dsh", arg)


def test_parse_arg():
  assert config_args.parse_arg("bits=12/24,smoke", {"bits": (48,), "smoke": False}) == {
    "bits": (12, 24),
    "smoke": True,
  }


@pytest.mark.parametrize("name, arg", [("dsh", ""), ("dnnh", ""), ("cnnh", "cnnh+,")])
def test_only_the_small_cifar10_preset_adds_jitter_and_weight_decay(name, arg):
  small = load_config(name, arg + "data=cifar10-dnnh")
  assert (small.augment.color_jitter, small.train.optimizer) == (0.4, "adamw")
  assert small.train.weight_decay > 0
  for data in ("embedded", "cifar10-dsh"):
    other = load_config(name, arg + f"data={data}")
    assert (other.augment.color_jitter, other.train.optimizer, other.train.weight_decay) == (
      0.0,
      "adam",
      0.0,
    )


def test_cnnh_mixes_up_and_trains_longer_on_the_small_cifar10_preset_only():
  for arg in ("cnnh,", "cnnh+,"):
    small_cifar10 = load_config("cnnh", arg + "data=cifar10-dnnh")
    assert (small_cifar10.augment.mixup, small_cifar10.train.epochs) == (1.0, 400)
    for data in ("embedded", "fashion-mnist", "cifar10-dsh"):
      other = load_config("cnnh", arg + f"data={data}")
      assert other.augment.mixup == 0.0
      assert other.train.epochs == load_config("dsh", f"data={data}").train.epochs
  dsh = load_config("dsh", "data=cifar10-dnnh")
  assert (dsh.augment.mixup, dsh.train.epochs) == (0.0, 300)
