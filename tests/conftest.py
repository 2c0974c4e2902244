"""Shared test helpers: loading the real configs, and where the optional CIFAR-10 shards are."""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# CIFAR-10 shards of the project's shared data folder, beside the checkout (absent elsewhere).
CIFAR10_DIR = ROOT.parent / "shared" / "data" / "cifar10"


def load_config(name: str, arg: str | None = None):
  """`configs/<name>.py`'s `get_config(arg)`, loaded by path as launch.py does."""
  spec = importlib.util.spec_from_file_location(f"configs_{name}", ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


needs_cifar10 = pytest.mark.skipif(
  not (CIFAR10_DIR / "test.npz").exists(), reason="CIFAR-10 shards not present"
)


def with_flip_and_crop(config):
  """The config with random flip + crop on (the embedded preset trains without), so that the
  equality tests (scanned vs looped, sharded vs not, vmapped vs separate) cover the
  augmentation inside the step."""
  config.augment.flip, config.augment.crop_padding = True, 2
  return config
