"""Tests for hashing/data.py on small data written to tmp_path, plus the embedded set."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hashing import data
from hashing.data import LabeledImages
from hashing.errors import UserError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian dataset-fashion-mnist.
CIFAR10_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


# ----------------------------------------------------------------------------------------------
# Writers for test data.


def _idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
  array = np.asarray(array, np.uint8)
  magic = 0x0800 | array.ndim if magic is None else magic
  header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
  return header + array.tobytes()


def _write_idx(path: Path, array: np.ndarray, **kwargs) -> None:
  raw = _idx_bytes(array, **kwargs)
  path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def _random_idx(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (n, 5, 4), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


def _write_idx_dir(root: Path, prefixes=("train", "t10k"), gz: bool = True) -> dict:
  root.mkdir(parents=True, exist_ok=True)
  ext = ".gz" if gz else ""
  arrays = {}
  for seed, prefix in enumerate(prefixes):
    images, labels = _random_idx(12 if prefix == "train" else 7, seed)
    _write_idx(root / f"{prefix}-images-idx3-ubyte{ext}", images)
    _write_idx(root / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    arrays[prefix] = (images, labels)
  return arrays


def _npz(path: Path, n: int = 6, *, size=(4, 5, 3), seed: int = 0, **arrays) -> dict:
  rng = np.random.default_rng(seed)
  content = {
    "image": rng.integers(0, 256, (n, *size), dtype=np.uint8),
    "label": rng.integers(0, 3, n),
  }
  content.update(arrays)
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez(path, **{k: v for k, v in content.items() if v is not None})
  return content


def _png(path: Path, size=(6, 4), color=(255, 0, 0), mode: str = "RGB") -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.new(mode, size, color).save(path)


def _labels_of(split: LabeledImages) -> list[list[int]]:
  return [np.flatnonzero(row).tolist() for row in split.labels]


def _raises(match: str):
  return pytest.raises(UserError, match=match)


# ----------------------------------------------------------------------------------------------
# LabeledImages.


def test_labeled_images_validates_shapes_and_dtypes():
  images = np.zeros((2, 3, 3, 1), np.uint8)
  labels = np.eye(2, dtype=np.uint8)
  split = LabeledImages(images, labels, class_names=["a", "b"])
  assert split.class_names == ("a", "b") and len(split) == 2 and split.num_classes == 2
  with pytest.raises(ValueError, match="uint8"):
    LabeledImages(images.astype(np.float32), labels)
  with pytest.raises(ValueError, match="N, H, W, C"):
    LabeledImages(images[..., 0], labels)
  with pytest.raises(ValueError, match="labels must be"):
    LabeledImages(images, labels[:1])
  with pytest.raises(ValueError, match="class_names"):
    LabeledImages(images, labels, class_names=("a",))
  with pytest.raises(ValueError, match="paths"):
    LabeledImages(images, labels, paths=("x",))


# ----------------------------------------------------------------------------------------------
# embedded and idx.


def test_embedded_is_fashion_mnist_test_set():
  splits = data.load_source("embedded")
  assert list(splits) == ["all"]
  split = splits["all"]
  assert split.images.shape == (10000, 28, 28, 1) and split.images.dtype == np.uint8
  assert split.labels.shape == (10000, 10) and split.labels.dtype == np.uint8
  assert (split.labels.sum(1) == 1).all()
  assert split.labels.sum(0).tolist() == [1000] * 10
  assert split.class_names == data.FASHION_MNIST_CLASS_NAMES
  assert split.class_names[0] == "T-shirt/top" and split.class_names[9] == "Ankle boot"


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
  arrays = _write_idx_dir(tmp_path, gz=gz)
  splits = data.load_source(f"idx:{tmp_path}")
  assert list(splits) == ["train", "test"]
  for prefix, split in (("train", splits["train"]), ("t10k", splits["test"])):
    images, labels = arrays[prefix]
    np.testing.assert_array_equal(split.images, images[..., None])
    assert split.labels.shape[1] == splits["train"].labels.shape[1]  # One width for both.
    np.testing.assert_array_equal(split.labels.argmax(1), labels)


def test_idx_only_test_pair(tmp_path):
  _write_idx_dir(tmp_path, prefixes=("t10k",))
  assert list(data.load_source(f"idx:{tmp_path}")) == ["test"]


def test_idx_image_size_resizes(tmp_path):
  _write_idx_dir(tmp_path)
  splits = data.load_source(f"idx:{tmp_path}", image_size=8)
  assert splits["train"].images.shape == (12, 8, 8, 1)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_idx_full_fashion_mnist_matches_embedded():
  splits = data.load_source(f"idx:{FASHION_MNIST_DIR}")
  assert splits["train"].images.shape == (60000, 28, 28, 1)
  assert splits["train"].labels.sum(0).tolist() == [6000] * 10
  np.testing.assert_array_equal(splits["test"].images, data.load_source("embedded")["all"].images)


def test_idx_truncated_gz(tmp_path):
  _write_idx_dir(tmp_path)
  path = tmp_path / "train-images-idx3-ubyte.gz"
  raw = path.read_bytes()
  path.write_bytes(raw[: len(raw) // 2])
  with _raises("truncated or not valid gzip"):
    data.load_source(f"idx:{tmp_path}")


def test_idx_not_gzip(tmp_path):
  _write_idx_dir(tmp_path)
  (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"<html>not found</html>")
  with _raises("t10k-labels-idx1-ubyte.gz is truncated or not valid gzip"):
    data.load_source(f"idx:{tmp_path}")


def test_idx_bad_magic(tmp_path):
  _write_idx_dir(tmp_path)
  images, _ = _random_idx(12)
  _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, magic=0x0801)
  with _raises("not an IDX images file: magic number 0x00000801, expected 0x00000803"):
    data.load_source(f"idx:{tmp_path}")


@pytest.mark.parametrize("delta, phrase", [(-1, "is truncated"), (1, "has trailing bytes")])
def test_idx_payload_length_must_be_exact(tmp_path, delta, phrase):
  _write_idx_dir(tmp_path, gz=False)
  path = tmp_path / "train-images-idx3-ubyte"
  raw = path.read_bytes()
  path.write_bytes(raw[:delta] if delta < 0 else raw + b"\0")
  with _raises(phrase):
    data.load_source(f"idx:{tmp_path}")


def test_idx_short_header(tmp_path):
  _write_idx_dir(tmp_path, gz=False)
  (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\0\0\x08")
  with _raises("shorter than an IDX header"):
    data.load_source(f"idx:{tmp_path}")


def test_idx_count_mismatch(tmp_path):
  _write_idx_dir(tmp_path)
  _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
  with _raises("has 12 images but .* has 5 labels"):
    data.load_source(f"idx:{tmp_path}")


def test_idx_missing_partner(tmp_path):
  _write_idx_dir(tmp_path)
  (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
  with _raises("found t10k-images-idx3-ubyte.gz but no matching t10k-labels"):
    data.load_source(f"idx:{tmp_path}")


def test_idx_empty_dir(tmp_path):
  with _raises("holds no IDX files.*apt-get install dataset-fashion-mnist"):
    data.load_source(f"idx:{tmp_path}")


def test_idx_missing_dir_hints_at_package(tmp_path):
  with _raises("does not exist.*apt-get install dataset-fashion-mnist"):
    data.load_source(f"idx:{tmp_path / 'nope'}")


# ----------------------------------------------------------------------------------------------
# npz.


def test_npz_class_indices_with_label_names(tmp_path):
  names = np.array(["cat", "dog", "eel", "fox"])
  content = _npz(tmp_path / "a.npz", label=np.array([0, 1, 1, 3, 0, 1]), label_names=names)
  split = data.load_source(f"npz:{tmp_path / 'a.npz'}")["all"]
  np.testing.assert_array_equal(split.images, content["image"])
  assert split.labels.shape == (6, 4)  # len(label_names), though class 2 never occurs.
  assert _labels_of(split) == [[0], [1], [1], [3], [0], [1]]
  assert split.class_names == ("cat", "dog", "eel", "fox")
  assert split.paths is None


def test_npz_without_label_names_uses_max_plus_one(tmp_path):
  _npz(tmp_path / "a.npz", label=np.array([0, 4, 1, 1, 0, 2], np.int32))
  split = data.load_source(f"npz:{tmp_path / 'a.npz'}")["all"]
  assert split.labels.shape == (6, 5) and split.class_names is None


def test_npz_multi_hot_grey_and_filenames(tmp_path):
  multi_hot = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 1], [0, 0, 0]], np.int64)
  filenames = np.array(["a.png", "b.png", "c.png", "d.png"])
  _npz(tmp_path / "m.npz", n=4, size=(3, 3), label=multi_hot, filename=filenames)
  split = data.load_source(f"npz:{tmp_path / 'm.npz'}")["all"]
  assert split.images.shape == (4, 3, 3, 1)  # [N, H, W] gains C = 1.
  np.testing.assert_array_equal(split.labels, multi_hot)
  assert split.labels.dtype == np.uint8
  assert split.paths == ("a.png", "b.png", "c.png", "d.png")


def test_npz_directory_with_train_and_test_shards(tmp_path):
  names = np.array(["a", "b", "c"])
  # Written out of order: shards are concatenated sorted by name.
  train1 = _npz(tmp_path / "train-1.npz", n=3, seed=1, label_names=names)
  train0 = _npz(tmp_path / "train-0.npz", n=4, seed=0, label_names=names)
  test = _npz(tmp_path / "test.npz", n=2, seed=2, label_names=names)
  _npz(tmp_path / "notes.npz", n=1)  # Neither train* nor test*: ignored.
  splits = data.load_source(f"npz:{tmp_path}")
  assert list(splits) == ["train", "test"]
  np.testing.assert_array_equal(
    splits["train"].images, np.concatenate([train0["image"], train1["image"]])
  )
  np.testing.assert_array_equal(
    splits["train"].labels.argmax(1), np.concatenate([train0["label"], train1["label"]])
  )
  np.testing.assert_array_equal(splits["test"].images, test["image"])
  assert splits["test"].class_names == ("a", "b", "c")


def test_npz_glob_gives_all(tmp_path):
  _npz(tmp_path / "part-b.npz", n=3, seed=1)
  _npz(tmp_path / "part-a.npz", n=4, seed=0)
  _npz(tmp_path / "other.npz", n=5)
  splits = data.load_source(f"npz:{tmp_path}/part-*.npz")
  assert list(splits) == ["all"] and len(splits["all"]) == 7


def test_npz_directory_without_shards_gives_all(tmp_path):
  _npz(tmp_path / "x.npz", n=3)
  _npz(tmp_path / "y.npz", n=2)
  assert len(data.load_source(f"npz:{tmp_path}")["all"]) == 5


def test_npz_image_size_mixes_sizes(tmp_path):
  _npz(tmp_path / "a.npz", size=(4, 5, 3))
  _npz(tmp_path / "b.npz", size=(7, 7, 3))
  with _raises("npz images differ in size: .*a.npz .*b.npz.*image_size"):
    data.load_source(f"npz:{tmp_path}/*.npz")
  split = data.load_source(f"npz:{tmp_path}/*.npz", image_size=6)["all"]
  assert split.images.shape == (12, 6, 6, 3)


@pytest.mark.skipif(not CIFAR10_DIR.is_dir(), reason="CIFAR-10 shards not present")
def test_npz_cifar10_shards():
  splits = data.load_source(f"npz:{CIFAR10_DIR}")
  assert splits["train"].images.shape == (50000, 32, 32, 3)
  assert splits["test"].images.shape == (10000, 32, 32, 3)
  assert splits["train"].labels.sum(0).tolist() == [5000] * 10
  assert splits["test"].labels.sum(0).tolist() == [1000] * 10
  assert splits["train"].class_names[0] == "airplane" and len(splits["test"].paths) == 10000


def test_npz_missing_arrays_are_named(tmp_path):
  np.savez(tmp_path / "a.npz", x=np.zeros((2, 3, 3), np.uint8), y=np.zeros(2))
  with _raises(r"no 'image' or 'label' array \(it has \['x', 'y'\]\)"):
    data.load_source(f"npz:{tmp_path / 'a.npz'}")


def test_npz_non_uint8_images(tmp_path):
  _npz(tmp_path / "a.npz", image=np.zeros((6, 4, 4, 3), np.float32))
  with _raises("'image' has dtype float32, expected uint8"):
    data.load_source(f"npz:{tmp_path / 'a.npz'}")


def test_npz_count_mismatch(tmp_path):
  _npz(tmp_path / "a.npz", label=np.array([0, 1]))
  with _raises("has 6 images but 2 labels"):
    data.load_source(f"npz:{tmp_path / 'a.npz'}")


@pytest.mark.parametrize(
  "label, names, phrase",
  [
    ([0, 1, -1, 0, 1, 0], None, r"label -1 is out of range"),
    ([0, 1, 2, 0, 1, 0], ["a", "b"], r"label 2 is out of range.*len\(label_names\) = 2"),
    ([[0, 2]] * 6, None, "must hold only 0 and 1"),
    ([0.0, 1.0, 1.0, 0.0, 1.0, 0.0], None, "expected integer class indices"),
  ],
)
def test_npz_bad_labels(tmp_path, label, names, phrase):
  names = None if names is None else np.array(names)
  _npz(tmp_path / "a.npz", label=np.array(label), label_names=names)
  with _raises(phrase):
    data.load_source(f"npz:{tmp_path / 'a.npz'}")


def test_npz_corrupt_file(tmp_path):
  (tmp_path / "a.npz").write_bytes(b"PK\x03\x04 definitely not a zip archive")
  with _raises("is not a readable .npz file"):
    data.load_source(f"npz:{tmp_path / 'a.npz'}")


def test_npz_no_matching_files(tmp_path):
  with _raises("no .npz files match"):
    data.load_source(f"npz:{tmp_path}/*.npz")
  with _raises("holds no .npz files"):
    data.load_source(f"npz:{tmp_path}")


# ----------------------------------------------------------------------------------------------
# folder.


def test_folder_single_label(tmp_path):
  _png(tmp_path / "dog" / "b.png", color=(0, 255, 0))
  _png(tmp_path / "dog" / "a.jpg", color=(0, 0, 255))
  _png(tmp_path / "cat" / "x.png", color=128, mode="L")  # Grey, converted to RGB.
  (tmp_path / "cat" / "notes.txt").write_text("not an image")  # Ignored.
  split = data.load_source(f"folder:{tmp_path}")["all"]
  assert split.class_names == ("cat", "dog")
  assert split.paths == ("cat/x.png", "dog/a.jpg", "dog/b.png")
  assert split.images.shape == (3, 4, 6, 3)
  assert _labels_of(split) == [[0], [1], [1]]
  np.testing.assert_array_equal(split.images[0], 128)
  np.testing.assert_array_equal(split.images[2, 0, 0], (0, 255, 0))


def test_folder_multi_label(tmp_path):
  _png(tmp_path / "imgs" / "1.png")
  _png(tmp_path / "imgs" / "deep" / "2.jpg")
  _png(tmp_path / "3.png")
  (tmp_path / "labels.txt").write_text(
    "# path labels\nimgs/1.png sky water\n\nimgs/deep/2.jpg person\n3.png water person sky\n"
  )
  split = data.load_source(f"folder:{tmp_path}")["all"]
  assert split.class_names == ("person", "sky", "water")
  assert split.paths == ("imgs/1.png", "imgs/deep/2.jpg", "3.png")
  assert _labels_of(split) == [[1, 2], [0], [0, 1, 2]]


def test_folder_resize_and_mixed_sizes(tmp_path):
  _png(tmp_path / "a" / "small.png", size=(4, 4))
  _png(tmp_path / "b" / "big.png", size=(10, 8))
  with _raises("a/small.png is 4x4 but b/big.png is 10x8; set image_size"):
    data.load_source(f"folder:{tmp_path}")
  split = data.load_source(f"folder:{tmp_path}", image_size=5)["all"]
  assert split.images.shape == (2, 5, 5, 3)
  np.testing.assert_array_equal(split.images[1], np.broadcast_to((255, 0, 0), (5, 5, 3)))


def test_folder_unreadable_image_is_named(tmp_path):
  _png(tmp_path / "a" / "good.png")
  (tmp_path / "a" / "bad.png").write_bytes(b"\x89PNG truncated")
  with _raises("cannot read image .*bad.png"):
    data.load_source(f"folder:{tmp_path}")


def test_folder_empty(tmp_path):
  with _raises("is empty: expected one subfolder per class"):
    data.load_source(f"folder:{tmp_path}")
  (tmp_path / "cls").mkdir()
  with _raises("holds no PNG/JPEG images"):
    data.load_source(f"folder:{tmp_path}")


def test_folder_labels_txt_missing_file(tmp_path):
  (tmp_path / "labels.txt").write_text("gone.png a b\n")
  with _raises("line 1: image 'gone.png' does not exist"):
    data.load_source(f"folder:{tmp_path}")


# ----------------------------------------------------------------------------------------------
# Specs and paths.


def test_hashing_data_dir_resolves_relative_paths(tmp_path, monkeypatch):
  data_dir = tmp_path / "datasets"
  _npz(data_dir / "sets" / "a.npz", n=3)
  _npz(data_dir / "sets" / "b.npz", n=2)
  elsewhere = tmp_path / "cwd"
  elsewhere.mkdir()
  monkeypatch.chdir(elsewhere)
  monkeypatch.delenv("HASHING_DATA_DIR", raising=False)
  with _raises("does not exist.*set HASHING_DATA_DIR"):
    data.load_source("npz:sets/a.npz")
  monkeypatch.setenv("HASHING_DATA_DIR", str(data_dir))
  assert len(data.load_source("npz:sets/a.npz")["all"]) == 3
  assert len(data.load_source("npz:sets/*.npz")["all"]) == 5
  with _raises("and in HASHING_DATA_DIR="):
    data.load_source("folder:missing")


def test_unknown_spec_lists_valid_ones():
  for spec in ("cifar10", "embedded:x", "zip:foo"):
    with _raises("unknown data source .*embedded, idx:<dir>, npz:.*folder:<dir>, tfds:"):
      data.load_source(spec)
  with _raises("needs something after 'npz:'"):
    data.load_source("npz:")


def test_bad_image_size():
  with _raises("image_size must be a positive integer"):
    data.load_source("embedded", image_size=0)


# ----------------------------------------------------------------------------------------------
# pool.


def _split(n: int, size: int = 2, width: int = 3, names=None, paths: bool = True) -> LabeledImages:
  return LabeledImages(
    images=np.full((n, size, size, 1), n, np.uint8),
    labels=np.eye(width, dtype=np.uint8)[np.arange(n) % width],
    class_names=names,
    paths=tuple(f"{n}-{i}" for i in range(n)) if paths else None,
  )


def test_pool_orders_train_test_all():
  splits = {"all": _split(1), "test": _split(2), "train": _split(3, names=("a", "b", "c"))}
  assert data.pool_offsets(splits) == {"train": (0, 3), "test": (3, 5), "all": (5, 6)}
  pooled = data.pool(splits)
  assert pooled.images[:, 0, 0, 0].tolist() == [3, 3, 3, 2, 2, 1]
  assert pooled.class_names == ("a", "b", "c")
  assert pooled.paths[:4] == ("3-0", "3-1", "3-2", "2-0")
  assert data.pool({"test": _split(2), "train": _split(3, paths=False)}).paths is None


def test_pool_rejects_mismatches():
  with _raises("label columns"):
    data.pool({"train": _split(2), "test": _split(2, width=4)})
  with _raises("has images"):
    data.pool({"train": _split(2), "test": _split(2, size=3)})
  with _raises("different class names"):
    data.pool({"train": _split(2, names="abc"), "test": _split(2, names="xyz")})
  with pytest.raises(ValueError, match="unknown split"):
    data.pool({"validation": _split(2)})


# ----------------------------------------------------------------------------------------------
# tfds: record conversion (pure) and the missing-package message.


def test_records_with_class_indices():
  records = [{"image": np.full((3, 3), i, np.uint8), "label": np.int64(i % 3)} for i in range(5)]
  split = data._records_to_labeled_images(records, 4, class_names=("a", "b", "c", "d"))
  assert split.images.shape == (5, 3, 3, 1)
  assert split.labels.shape == (5, 4) and _labels_of(split) == [[0], [1], [2], [0], [1]]
  assert split.class_names == ("a", "b", "c", "d")
  split = data._records_to_labeled_images(records, None)
  assert split.labels.shape == (5, 3) and split.class_names is None


def test_records_with_multi_hot_and_index_lists():
  image = np.zeros((2, 2, 3), np.uint8)
  multi_hot = [{"image": image, "label": np.array(v)} for v in ([1, 0, 1], [0, 1, 0])]
  split = data._records_to_labeled_images(multi_hot, 3)
  assert _labels_of(split) == [[0, 2], [1]]
  lists = [{"image": image, "labels": np.array(v, np.int64)} for v in ([4, 1], [], [2])]
  split = data._records_to_labeled_images(lists, 5, image_size=4)
  assert _labels_of(split) == [[1, 4], [], [2]] and split.images.shape == (3, 4, 4, 3)


def test_records_errors():
  image = np.zeros((2, 2, 3), np.uint8)
  with _raises("record 0 has keys"):
    data._records_to_labeled_images([{"img": image, "label": 0}], 2)
  with _raises("label 5 is out of range"):
    data._records_to_labeled_images([{"image": image, "label": 5}], 2)
  with _raises("images differ in size"):
    data._records_to_labeled_images(
      [{"image": image, "label": 0}, {"image": np.zeros((3, 3, 3), np.uint8), "label": 1}], 2
    )
  with _raises("no records"):
    data._records_to_labeled_images([], 2)


def test_tfds_spec_parsing():
  assert data._parse_tfds_arg("mnist") == ("mnist", None)
  assert data._parse_tfds_arg("mnist:test") == ("mnist", "test")
  assert data._parse_tfds_arg("mnist:3.0.1") == ("mnist:3.0.1", None)
  assert data._parse_tfds_arg("voc/2007:5.0.0:train[:10%]") == ("voc/2007:5.0.0", "train[:10%]")


def test_tfds_missing_package(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # Makes the import fail.
  with _raises(r"pip install tensorflow-datasets \(or pip install -e \.\[tfds\]\).*TFDS_DATA_DIR"):
    data.load_source("tfds:mnist")


class _FakeSource(list):
  """A list of records with the `dataset_info` of a tfds array_record data source."""

  def __init__(self, records, num_classes=None):
    super().__init__(records)
    label = types.SimpleNamespace(num_classes=num_classes, names=["a", "b", "c"][:num_classes])
    self.dataset_info = types.SimpleNamespace(features={"label": label})


def test_tfds_with_fake_module(monkeypatch):
  image = np.zeros((2, 2, 1), np.uint8)
  calls = []

  def data_source(name, split, data_dir, download):
    calls.append((name, split, data_dir, download))
    if name == "missing":
      raise FileNotFoundError("no such dataset")
    train = _FakeSource([{"image": image, "label": 0}, {"image": image, "label": 2}], 3)
    test = _FakeSource([{"image": image, "label": 1}])  # No metadata: width from max + 1.
    return {"train": train, "test": test, "validation": test} if split is None else train

  fake = types.SimpleNamespace(data_source=data_source)
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
  monkeypatch.setenv("TFDS_DATA_DIR", "/tfds")
  splits = data.load_source("tfds:fake")
  assert list(splits) == ["train", "test"] and calls[-1] == ("fake", None, "/tfds", False)
  assert splits["train"].class_names == ("a", "b", "c")
  assert splits["test"].labels.tolist() == [[0, 1, 0]]  # Padded to the train width.
  splits = data.load_source("tfds:fake:train[:50%]")
  assert list(splits) == ["all"] and calls[-1][1] == "train[:50%]"
  with _raises("cannot open tfds dataset 'missing'.*no such dataset.*tfds build missing"):
    data.load_source("tfds:missing")


def test_import_does_not_import_tensorflow_datasets(tmp_path):
  # A tensorflow_datasets that fails on import proves that `import hashing.data` never tries.
  (tmp_path / "tensorflow_datasets.py").write_text("raise RuntimeError('imported tfds')\n")
  env = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).resolve().parents[1])]),
  }
  code = "import sys, hashing.data; assert 'tensorflow_datasets' not in sys.modules"
  result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
