"""Data sources -> uint8 images [N, H, W, C] and uint8 multi-hot labels [N, L].

A source is named by a spec string (see `load_source`):

  embedded                     Fashion-MNIST test set shipped with the package (10,000 images).
  idx:<dir>                    MNIST-format IDX files (train-*/t10k-*, gzipped or not).
  npz:<file | glob | dir>      numpy npz files with arrays `image`, `label` (+ `label_names`).
  folder:<dir>                 one subfolder per class, or a multi-label `labels.txt`.
  tfds:<name>[:<split>]        a prepared tensorflow-datasets dataset (array_record).

Every problem with the user's data raises `UserError` with a one-line message that says what was
expected and how to fix it. Single-label data becomes one-hot rows, so the rest of the code only
ever sees multi-hot labels (two images are relevant to each other when their rows share a 1).
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import importlib.resources
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hashing.errors import UserError

FASHION_MNIST_CLASS_NAMES = (
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
)

# The order in which `pool` concatenates splits.
SPLIT_ORDER = ("train", "test", "all")

_VALID_SPECS = "embedded, idx:<dir>, npz:<file|glob|dir>, folder:<dir>, tfds:<name>[:<split>]"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_IDX_SPLITS = (("train", "train"), ("t10k", "test"))  # (file prefix, split name)
_FASHION_MNIST_HINT = (
  "Fashion-MNIST on Debian/Ubuntu: apt-get install dataset-fashion-mnist "
  "(files in /usr/share/datasets/fashion-mnist)"
)


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: `==` on arrays is not a bool.
class LabeledImages:
  """Images with multi-hot labels.

  Attributes:
    images: uint8 [N, H, W, C].
    labels: uint8 multi-hot [N, L] of 0/1 (single-label data is one-hot).
    class_names: L names, when the source knows them.
    paths: N file paths or ids (relative to the source root), when the source has them.
  """

  images: np.ndarray
  labels: np.ndarray
  class_names: tuple[str, ...] | None = None
  paths: tuple[str, ...] | None = None

  def __post_init__(self):
    # Loaders validate user data first and raise UserError; a failure here is a bug in the
    # calling code, hence ValueError.
    if not isinstance(self.images, np.ndarray) or self.images.dtype != np.uint8:
      raise ValueError(f"images must be a uint8 array, got {_describe(self.images)}")
    if self.images.ndim != 4:
      raise ValueError(f"images must be [N, H, W, C], got shape {self.images.shape}")
    if not isinstance(self.labels, np.ndarray) or self.labels.dtype != np.uint8:
      raise ValueError(f"labels must be a uint8 array, got {_describe(self.labels)}")
    if self.labels.ndim != 2 or len(self.labels) != len(self.images):
      raise ValueError(
        f"labels must be [N, L] with N = {len(self.images)}, got shape {self.labels.shape}"
      )
    if self.class_names is not None:
      object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
      if len(self.class_names) != self.labels.shape[1]:
        raise ValueError(
          f"{len(self.class_names)} class_names for {self.labels.shape[1]} label columns"
        )
    if self.paths is not None:
      object.__setattr__(self, "paths", tuple(str(p) for p in self.paths))
      if len(self.paths) != len(self.images):
        raise ValueError(f"{len(self.paths)} paths for {len(self.images)} images")

  def __len__(self) -> int:
    return len(self.images)

  @property
  def num_classes(self) -> int:
    return self.labels.shape[1]


def load_source(spec: str, *, image_size: int | None = None) -> dict[str, LabeledImages]:
  """Loads a data source into named splits.

  Args:
    spec: which data, e.g. "embedded", "idx:data/fashion", "npz:data/cifar10", "npz:x/*.npz",
      "folder:photos", "tfds:mnist" or "tfds:mnist:train". Relative paths that do not exist
      relative to the cwd are looked up under $HASHING_DATA_DIR when it is set.
    image_size: if given, every image is resized (bilinear) to image_size x image_size; needed
      for folders (and tfds datasets) whose images differ in size.

  Returns:
    {"train": ..., "test": ...} (those present) when the source has an official split, else
    {"all": ...}. All splits of one source have the same image shape and label width.

  Raises:
    UserError: the spec is malformed or the data is missing, corrupt or inconsistent.
  """
  if image_size is not None:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
      raise UserError(f"image_size must be a positive integer or None, got {image_size!r}")
    image_size = int(image_size)
    if image_size < 1:
      raise UserError(f"image_size must be a positive integer or None, got {image_size}")
  kind, colon, arg = spec.strip().partition(":")
  kind = kind.strip().lower()
  arg = arg.strip()
  if kind == "embedded" and not colon:
    splits = _load_embedded()
  elif kind in ("idx", "npz", "folder", "tfds") and colon:
    if not arg:
      raise UserError(
        f"data source {spec!r} needs something after '{kind}:'; valid: {_VALID_SPECS}"
      )
    if kind == "idx":
      splits = _load_idx(_resolve_path(arg, spec, hint=_FASHION_MNIST_HINT))
    elif kind == "npz":
      splits = _load_npz(arg, spec, image_size)
    elif kind == "folder":
      splits = {"all": _load_folder(_resolve_path(arg, spec), image_size)}
    else:
      splits = _load_tfds(arg, image_size)
  else:
    raise UserError(f"unknown data source {spec!r}; valid sources: {_VALID_SPECS}")
  if image_size is not None:
    # Resizes embedded/idx data; a no-op for loaders that already resized while reading.
    splits = {
      name: dataclasses.replace(split, images=_resize(split.images, image_size))
      for name, split in splits.items()
    }
  return splits


def pool_offsets(splits: Mapping[str, LabeledImages]) -> dict[str, tuple[int, int]]:
  """[start, stop) of each split in `pool(splits)`, in SPLIT_ORDER."""
  _check_split_names(splits)
  offsets = {}
  start = 0
  for name in SPLIT_ORDER:
    if name in splits:
      offsets[name] = (start, start + len(splits[name]))
      start += len(splits[name])
  return offsets


def pool(splits: Mapping[str, LabeledImages]) -> LabeledImages:
  """Concatenates the splits in SPLIT_ORDER (train, test, all); see `pool_offsets`.

  Raises:
    UserError: the splits differ in image shape, label width or class names.
  """
  _check_split_names(splits)
  parts = [(name, splits[name]) for name in SPLIT_ORDER if name in splits]
  first_name, first = parts[0]
  class_names = None
  for name, part in parts:
    if part.images.shape[1:] != first.images.shape[1:]:
      raise UserError(
        f"cannot pool splits: {first_name!r} has images {first.images.shape[1:]} but {name!r} "
        f"has {part.images.shape[1:]}; set image_size to resize them to one size"
      )
    if part.num_classes != first.num_classes:
      raise UserError(
        f"cannot pool splits: {first_name!r} has {first.num_classes} label columns but "
        f"{name!r} has {part.num_classes}"
      )
    if part.class_names is not None:
      if class_names is not None and part.class_names != class_names:
        raise UserError(f"cannot pool splits: {name!r} has different class names than the others")
      class_names = part.class_names
  if len(parts) == 1:
    return first
  paths = None
  if all(part.paths is not None for _, part in parts):
    paths = tuple(p for _, part in parts for p in part.paths)
  return LabeledImages(
    images=np.concatenate([part.images for _, part in parts]),
    labels=np.concatenate([part.labels for _, part in parts]),
    class_names=class_names,
    paths=paths,
  )


def _check_split_names(splits: Mapping[str, LabeledImages]) -> None:
  # Programming errors (load_source only makes these keys), hence ValueError; silently
  # dropping an unknown split would be worse.
  if not splits:
    raise ValueError("no splits to pool")
  unknown = set(splits) - set(SPLIT_ORDER)
  if unknown:
    raise ValueError(f"unknown split names {sorted(unknown)}; expected some of {SPLIT_ORDER}")


# ----------------------------------------------------------------------------------------------
# Paths.


def _resolve_path(raw: str, spec: str, *, hint: str = "") -> Path:
  """An existing path: `raw` itself, or relative to $HASHING_DATA_DIR when that is set."""
  path = Path(raw).expanduser()
  if path.exists():
    return path
  data_dir = os.environ.get("HASHING_DATA_DIR")
  if data_dir and not path.is_absolute():
    candidate = Path(data_dir).expanduser() / path
    if candidate.exists():
      return candidate
  raise UserError(_missing_message(raw, spec, data_dir, path.is_absolute(), hint))


def _missing_message(raw: str, spec: str, data_dir: str | None, absolute: bool, hint: str) -> str:
  if absolute:
    where = ""
  elif data_dir:
    where = f" (looked in {os.getcwd()} and in HASHING_DATA_DIR={data_dir})"
  else:
    where = (
      f" (looked in {os.getcwd()}; set HASHING_DATA_DIR to resolve relative paths against "
      "your data directory)"
    )
  return f"data source {spec!r}: {raw!r} does not exist{where}" + (f"; {hint}" if hint else "")


# ----------------------------------------------------------------------------------------------
# embedded and idx: MNIST-format files.


def _load_embedded() -> dict[str, LabeledImages]:
  root = importlib.resources.files("hashing") / "datasets" / "fashion_mnist"
  try:
    image_bytes = (root / "t10k-images-idx3-ubyte.gz").read_bytes()
    label_bytes = (root / "t10k-labels-idx1-ubyte.gz").read_bytes()
  except OSError as e:
    raise UserError(
      f"the embedded Fashion-MNIST files are missing from the installed package ({e}); "
      "reinstall it with `pip install -e .`"
    ) from e
  split = _idx_pair(
    _gunzip(image_bytes, "embedded t10k-images-idx3-ubyte.gz"),
    _gunzip(label_bytes, "embedded t10k-labels-idx1-ubyte.gz"),
    "embedded t10k-images-idx3-ubyte.gz",
    "embedded t10k-labels-idx1-ubyte.gz",
    num_classes=len(FASHION_MNIST_CLASS_NAMES),
  )
  return {"all": dataclasses.replace(split, class_names=FASHION_MNIST_CLASS_NAMES)}


def _load_idx(root: Path) -> dict[str, LabeledImages]:
  if not root.is_dir():
    raise UserError(f"idx:{root} must be a directory holding train-*/t10k-* IDX files")
  found = {}  # split -> (images path, labels path)
  for prefix, split in _IDX_SPLITS:
    images = _first_existing(root, f"{prefix}-images-idx3-ubyte")
    labels = _first_existing(root, f"{prefix}-labels-idx1-ubyte")
    if images and labels:
      found[split] = (images, labels)
    elif images or labels:
      have, missing = (images, "labels") if images else (labels, "images")
      raise UserError(
        f"{root}: found {have.name} but no matching {prefix}-{missing}-idx*-ubyte[.gz]; "
        "IDX images and labels come in pairs"
      )
  if not found:
    raise UserError(
      f"{root} holds no IDX files: expected train-images-idx3-ubyte.gz + "
      "train-labels-idx1-ubyte.gz and/or t10k-images-idx3-ubyte.gz + t10k-labels-idx1-ubyte.gz "
      f"(also accepted without .gz); {_FASHION_MNIST_HINT}"
    )
  raw = {
    split: (_read_idx(images, 3), _read_idx(labels, 1), images.name, labels.name)
    for split, (images, labels) in found.items()
  }
  # One label width for all splits, so that they can be pooled.
  num_classes = max(int(labels.max(initial=0)) for _, labels, _, _ in raw.values()) + 1
  return {
    split: _idx_arrays_to_split(images, labels, images_name, labels_name, num_classes)
    for split, (images, labels, images_name, labels_name) in raw.items()
  }


def _first_existing(root: Path, stem: str) -> Path | None:
  for name in (stem + ".gz", stem):
    if (root / name).is_file():
      return root / name
  return None


def _read_idx(path: Path, ndim: int) -> np.ndarray:
  try:
    data = path.read_bytes()
  except OSError as e:
    raise UserError(f"cannot read {path}: {e}") from e
  if path.suffix == ".gz":
    data = _gunzip(data, str(path))
  return _parse_idx(data, str(path), ndim)


def _gunzip(data: bytes, name: str) -> bytes:
  try:
    return gzip.decompress(data)
  except (EOFError, OSError, zlib.error) as e:
    raise UserError(f"{name} is truncated or not valid gzip ({e}); download it again") from e


def _parse_idx(data: bytes, name: str, ndim: int) -> np.ndarray:
  """Parses an uint8 IDX file: magic 0x000008NN (NN = ndim), NN big-endian dims, payload."""
  kind = "images" if ndim == 3 else "labels"
  expected_magic = 0x0800 | ndim
  if len(data) < 4 + 4 * ndim:
    raise UserError(f"{name} is truncated ({len(data)} bytes, shorter than an IDX header)")
  (magic,) = struct.unpack(">I", data[:4])
  if magic != expected_magic:
    raise UserError(
      f"{name} is not an IDX {kind} file: magic number 0x{magic:08x}, expected "
      f"0x{expected_magic:08x}; check the file name and download it again"
    )
  dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
  header = 4 + 4 * ndim
  expected = header + int(np.prod(dims, dtype=np.int64))
  if len(data) != expected:
    problem = "is truncated" if len(data) < expected else "has trailing bytes"
    raise UserError(
      f"{name} {problem}: header says {'x'.join(map(str, dims))} so {expected} bytes, but the "
      f"file has {len(data)}; download it again"
    )
  # frombuffer on bytes is read-only; copy so that callers get an ordinary array.
  return np.frombuffer(data, np.uint8, offset=header).reshape(dims).copy()


def _idx_pair(
  image_data: bytes, label_data: bytes, images_name: str, labels_name: str, num_classes: int
) -> LabeledImages:
  images = _parse_idx(image_data, images_name, 3)
  labels = _parse_idx(label_data, labels_name, 1)
  return _idx_arrays_to_split(images, labels, images_name, labels_name, num_classes)


def _idx_arrays_to_split(
  images: np.ndarray, labels: np.ndarray, images_name: str, labels_name: str, num_classes: int
) -> LabeledImages:
  if len(images) != len(labels):
    raise UserError(
      f"{images_name} has {len(images)} images but {labels_name} has {len(labels)} labels; "
      "they must be the two files of the same split"
    )
  multi_hot = _to_multi_hot(labels, num_classes, labels_name, f"{num_classes} classes")
  return LabeledImages(images=images[..., None], labels=multi_hot)


# ----------------------------------------------------------------------------------------------
# npz.


@dataclasses.dataclass
class _NpzPart:
  """The arrays of one npz file, checked but not yet converted."""

  path: Path
  images: np.ndarray  # uint8 [N, H, W, C]
  labels: np.ndarray  # int [N] class indices or 0/1 [N, L]
  label_names: tuple[str, ...] | None
  filenames: tuple[str, ...] | None


def _load_npz(arg: str, spec: str, image_size: int | None) -> dict[str, LabeledImages]:
  files = _npz_files(arg, spec)
  parts = {split: [_read_npz(p) for p in paths] for split, paths in files.items()}
  every = [part for split_parts in parts.values() for part in split_parts]
  if image_size is not None:
    # Resize per file before the size check, so that files of different sizes can be mixed.
    for part in every:
      part.images = _resize(part.images, image_size)
  first = every[0]
  for part in every[1:]:
    if part.images.shape[1:] != first.images.shape[1:]:
      raise UserError(
        f"npz images differ in size: {first.path} has {first.images.shape[1:]} but {part.path} "
        f"has {part.images.shape[1:]} ([H, W, C]); use files of one size, or set image_size "
        "(config.data.image_size) to resize them"
      )

  class_names = None
  for part in every:
    if part.label_names is not None:
      if class_names is not None and part.label_names != class_names:
        raise UserError(
          f"{part.path} has different label_names than the other npz files of {spec!r}; "
          "all files of one source must share one label_names array"
        )
      class_names = part.label_names
  if class_names is not None:
    num_classes, classes_from = len(class_names), f"len(label_names) = {len(class_names)}"
  else:
    num_classes, classes_from = _infer_num_classes(every)

  splits = {}
  for split, split_parts in parts.items():
    labels = [_to_multi_hot(p.labels, num_classes, str(p.path), classes_from) for p in split_parts]
    paths = None
    if all(p.filenames is not None for p in split_parts):
      paths = tuple(name for p in split_parts for name in p.filenames)
    images = np.concatenate([p.images for p in split_parts])
    if not len(images):
      raise UserError(f"the npz files of split {split!r} of {spec!r} hold no images")
    splits[split] = LabeledImages(
      images=images, labels=np.concatenate(labels), class_names=class_names, paths=paths
    )
  return splits


def _npz_files(arg: str, spec: str) -> dict[str, list[Path]]:
  """{split: sorted npz files}: a file or glob gives "all"; a directory train*/test* splits."""
  path = Path(arg).expanduser()
  data_dir = os.environ.get("HASHING_DATA_DIR")
  if not path.exists() and glob.has_magic(arg):
    matches = sorted(glob.glob(os.path.expanduser(arg), recursive=True))
    if not matches and data_dir and not path.is_absolute():
      pattern = os.path.join(os.path.expanduser(data_dir), arg)
      matches = sorted(glob.glob(pattern, recursive=True))
    matches = [Path(m) for m in matches if m.endswith(".npz") and os.path.isfile(m)]
    if not matches:
      where = ""
      if not path.is_absolute():
        where = f" (looked in {os.getcwd()}" + (
          f" and under HASHING_DATA_DIR={data_dir})" if data_dir else "; HASHING_DATA_DIR is unset)"
        )
      raise UserError(f"data source {spec!r}: no .npz files match {arg!r}{where}")
    return {"all": matches}
  path = _resolve_path(arg, spec)
  if path.is_file():
    return {"all": [path]}
  train = sorted(path.glob("train*.npz"))
  test = sorted(path.glob("test*.npz"))
  if train or test:
    return {name: files for name, files in (("train", train), ("test", test)) if files}
  every = sorted(path.glob("*.npz"))
  if not every:
    raise UserError(
      f"data source {spec!r}: directory {path} holds no .npz files; expected train*.npz and "
      "test*.npz shards (or any *.npz, pooled as one split)"
    )
  return {"all": every}


def _read_npz(path: Path) -> _NpzPart:
  try:
    npz = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
    raise UserError(f"{path} is not a readable .npz file ({e}); write it again") from e
  if not isinstance(npz, np.lib.npyio.NpzFile):
    raise UserError(
      f"{path} holds a single array, not an .npz archive; save it with "
      "np.savez(path, image=..., label=...)"
    )
  with npz:
    missing = [key for key in ("image", "label") if key not in npz.files]
    if missing:
      raise UserError(
        f"{path} has no {' or '.join(repr(k) for k in missing)} array (it has "
        f"{sorted(npz.files)}); expected image uint8 [N, H, W, C] and label [N] or [N, L]"
      )
    try:
      images = npz["image"]
      labels = npz["label"]
      label_names = npz["label_names"] if "label_names" in npz.files else None
      filenames = npz["filename"] if "filename" in npz.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
      # Object arrays (allow_pickle=False) and corrupt members end up here.
      raise UserError(
        f"{path}: cannot read its arrays ({e}); store strings as np.str_ arrays, not objects"
      ) from e

  if images.dtype != np.uint8:
    raise UserError(
      f"{path}: 'image' has dtype {images.dtype}, expected uint8 in [0, 255]; convert it, e.g. "
      "np.round(x * 255).astype(np.uint8) for floats in [0, 1]"
    )
  if images.ndim == 3:
    images = images[..., None]  # Grey [N, H, W] -> [N, H, W, 1].
  if images.ndim != 4:
    raise UserError(f"{path}: 'image' has shape {images.shape}, expected [N, H, W, C] or [N, H, W]")
  num_labels = labels.shape[0] if labels.ndim else 0  # A 0-d label array holds no rows.
  if num_labels != len(images):
    raise UserError(
      f"{path} has {len(images)} images but {num_labels} labels; 'image' and 'label' need one "
      "row per image"
    )
  return _NpzPart(
    path=path,
    images=images,
    labels=labels,
    label_names=_strings(label_names, path, "label_names", None),
    filenames=_strings(filenames, path, "filename", len(images)),
  )


def _strings(
  array: np.ndarray | None, path: Path, key: str, length: int | None
) -> tuple[str, ...] | None:
  if array is None:
    return None
  wrong_length = length is not None and len(array) != length
  if array.ndim != 1 or array.dtype.kind not in "US" or wrong_length:
    expected = f"[{length}]" if length is not None else "[L]"
    raise UserError(
      f"{path}: {key!r} must be a 1-D string array {expected}, got {array.dtype} {array.shape}"
    )
  return tuple(x.decode() if isinstance(x, bytes) else str(x) for x in array.tolist())


def _infer_num_classes(parts: Sequence[_NpzPart]) -> tuple[int, str]:
  """Label width without label_names: the multi-hot width, else the largest index + 1."""
  widths = {p.labels.shape[1] for p in parts if p.labels.ndim == 2}
  if len(widths) > 1:
    raise UserError(
      f"npz multi-hot labels differ in width ({sorted(widths)}) between files; all files of "
      "one source need the same classes"
    )
  if widths:
    width = widths.pop()
    return width, f"the multi-hot labels have {width} columns"
  largest = max(
    (int(p.labels.max()) for p in parts if p.labels.ndim == 1 and p.labels.size), default=-1
  )
  return largest + 1, "no label_names"


# ----------------------------------------------------------------------------------------------
# Labels.


def _to_multi_hot(label: np.ndarray, num_classes: int, where: str, classes_from: str) -> np.ndarray:
  """Class indices [N] or 0/1 [N, L] -> uint8 multi-hot [N, num_classes]."""
  if label.ndim == 1:
    if not np.issubdtype(label.dtype, np.integer):
      raise UserError(
        f"{where}: labels have dtype {label.dtype}; expected integer class indices [N] or a "
        "0/1 multi-hot matrix [N, L]"
      )
    if label.size and (label.min() < 0 or label.max() >= num_classes):
      bad = int(label.min()) if label.min() < 0 else int(label.max())
      raise UserError(
        f"{where}: label {bad} is out of range; class indices must be in [0, {num_classes}) "
        f"({classes_from})"
      )
    multi_hot = np.zeros((len(label), num_classes), np.uint8)
    multi_hot[np.arange(len(label)), label] = 1
    return multi_hot
  if label.ndim == 2:
    if not (np.issubdtype(label.dtype, np.number) or label.dtype == bool):
      raise UserError(f"{where}: multi-hot labels have dtype {label.dtype}; expected 0/1 numbers")
    if label.shape[1] != num_classes:
      raise UserError(
        f"{where}: multi-hot labels have {label.shape[1]} columns, expected {num_classes} "
        f"({classes_from})"
      )
    if not ((label == 0) | (label == 1)).all():
      raise UserError(
        f"{where}: multi-hot labels [N, L] must hold only 0 and 1; for class indices store "
        "label with shape [N]"
      )
    return label.astype(np.uint8)
  raise UserError(f"{where}: labels have shape {label.shape}; expected [N] or [N, L]")


# ----------------------------------------------------------------------------------------------
# folder.


def _load_folder(root: Path, image_size: int | None) -> LabeledImages:
  if not root.is_dir():
    raise UserError(f"folder:{root} must be a directory (one subfolder of images per class)")
  if (root / "labels.txt").is_file():
    entries, class_names = _read_labels_txt(root)
  else:
    entries, class_names = _scan_class_folders(root)
  index = {name: i for i, name in enumerate(class_names)}
  labels = np.zeros((len(entries), len(class_names)), np.uint8)
  images = []
  first = None  # (relative path, shape) of the first image, for the size check.
  for row, (rel, names) in enumerate(entries):
    labels[row, [index[n] for n in names]] = 1
    image = _read_image(root / rel, image_size)
    if first is None:
      first = (rel, image.shape)
    elif image.shape != first[1]:
      raise UserError(
        f"images in {root} differ in size: {first[0]} is {first[1][1]}x{first[1][0]} but {rel} "
        f"is {image.shape[1]}x{image.shape[0]}; set image_size (config.data.image_size) to "
        "resize every image"
      )
    images.append(image)
  return LabeledImages(
    images=np.stack(images),
    labels=labels,
    class_names=tuple(class_names),
    paths=tuple(rel for rel, _ in entries),
  )


def _scan_class_folders(root: Path) -> tuple[list[tuple[str, list[str]]], list[str]]:
  """(relative path, [class]) for every image under root/<class>/ and the sorted classes."""
  # Hidden folders (.git, .ipynb_checkpoints) are never classes.
  class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
  if not class_dirs:
    raise UserError(
      f"folder {root} is empty: expected one subfolder per class holding PNG/JPEG images, or "
      "a labels.txt with lines 'relative/path label label ...'"
    )
  entries = []
  for class_dir in class_dirs:
    files = sorted(
      p
      for p in class_dir.rglob("*")
      if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
      raise UserError(
        f"class folder {class_dir} holds no PNG/JPEG images; add images or remove the folder"
      )
    entries += [(p.relative_to(root).as_posix(), [class_dir.name]) for p in files]
  return entries, [d.name for d in class_dirs]


def _read_labels_txt(root: Path) -> tuple[list[tuple[str, list[str]]], list[str]]:
  """Parses root/labels.txt: lines 'relative/path label label ...' (blank and # lines skipped)."""
  labels_txt = root / "labels.txt"
  entries = []
  try:
    lines = labels_txt.read_text().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise UserError(f"cannot read {labels_txt} ({e}); it must be a UTF-8 text file") from e
  for number, line in enumerate(lines, 1):
    fields = line.split()
    if not fields or fields[0].startswith("#"):
      continue
    rel, names = fields[0], fields[1:]
    if not (root / rel).is_file():
      raise UserError(
        f"{labels_txt} line {number}: image {rel!r} does not exist under {root} "
        "(paths are relative to the folder holding labels.txt)"
      )
    entries.append((rel, sorted(set(names))))
  if not entries:
    raise UserError(f"{labels_txt} lists no images; expected lines 'relative/path label label ...'")
  return entries, sorted({n for _, names in entries for n in names})


def _read_image(path: Path, image_size: int | None) -> np.ndarray:
  """Reads one image file as RGB uint8 [H, W, 3], resized when image_size is given."""
  try:
    with Image.open(path) as image:
      # Always RGB: a folder may mix grey, palette and colour files, and one channel count
      # keeps them stackable.
      rgb = image.convert("RGB")
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise UserError(f"cannot read image {path} ({e}); replace or delete the file") from e
  if image_size is not None and rgb.size != (image_size, image_size):
    rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
  return np.asarray(rgb, dtype=np.uint8)


def _resize(images: np.ndarray, size: int) -> np.ndarray:
  """Bilinear resize uint8 [N, H, W, C] -> [N, size, size, C]; a no-op at that size already."""
  n, height, width, channels = images.shape
  if (height, width) == (size, size):
    return images
  out = np.empty((n, size, size, channels), np.uint8)
  bilinear = Image.Resampling.BILINEAR
  for i in range(n):
    if channels in (3, 4):  # PIL has RGB/RGBA modes; other channel counts go one by one.
      out[i] = np.asarray(Image.fromarray(images[i]).resize((size, size), bilinear))
    else:
      for c in range(channels):
        out[i, :, :, c] = np.asarray(
          Image.fromarray(images[i, :, :, c]).resize((size, size), bilinear)
        )
  return out


# ----------------------------------------------------------------------------------------------
# tfds.


def _parse_tfds_arg(arg: str) -> tuple[str, str | None]:
  """'name[/config][:x.y.z][:split]' -> (name with config and version, split or None)."""
  # tfds itself uses ':' before a version ('mnist:3.0.1'), and split slices may hold ':'
  # ('train[:10%]'), so the split starts at the first ':' that is not followed by a version.
  match = re.fullmatch(r"([^:]+(?::\d+\.\d+\.\d+)?)(?::(.*))?", arg)
  if match is None:
    raise UserError(f"malformed tfds spec 'tfds:{arg}'; expected tfds:<name>[:<split>]")
  name, split = match.groups()
  return name, split or None


def _load_tfds(arg: str, image_size: int | None) -> dict[str, LabeledImages]:
  name, split = _parse_tfds_arg(arg)
  try:
    import tensorflow_datasets as tfds  # Lazy: an optional, heavy dependency.
  except ImportError as e:
    raise UserError(
      f"data source 'tfds:{arg}' needs tensorflow-datasets: pip install tensorflow-datasets "
      "(or pip install -e .[tfds]); the data must also be prepared as array_record, e.g. "
      f"`tfds build {name} --file_format=array_record`, in $TFDS_DATA_DIR "
      "(default ~/tensorflow_datasets)"
    ) from e
  data_dir = os.environ.get("TFDS_DATA_DIR")
  try:
    # download=False: a training launch must not start a download of possibly hundreds of GB.
    sources = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:
    # tfds signals a missing, unprepared or non-array_record dataset with many exception types.
    raise UserError(
      f"cannot open tfds dataset {name!r} (split {split or 'train/test'}) in "
      f"{data_dir or '~/tensorflow_datasets'}: {type(e).__name__}: {e}; prepare it with "
      f"`tfds build {name} --file_format=array_record` and set TFDS_DATA_DIR"
    ) from e
  if split is None:
    named = {key: sources[key] for key in ("train", "test") if key in sources}
    if not named:
      raise UserError(
        f"tfds dataset {name!r} has no 'train' or 'test' split (it has {sorted(sources)}); "
        f"name one: tfds:{name}:<split>"
      )
  else:
    # One explicitly chosen split is a single pool, like a single npz file.
    named = {"all": sources}
  splits = {}
  for key, source in named.items():
    num_classes, class_names = _tfds_label_info(source)
    records = (source[i] for i in range(len(source)))
    splits[key] = _records_to_labeled_images(
      records,
      num_classes,
      class_names=class_names,
      image_size=image_size,
      where=f"tfds:{name}:{split or key}",
    )
  widths = {s.num_classes for s in splits.values()}
  if len(widths) > 1:
    # Without label metadata the width comes from the largest label seen in each split.
    width = max(widths)
    splits = {
      key: dataclasses.replace(s, labels=np.pad(s.labels, ((0, 0), (0, width - s.num_classes))))
      for key, s in splits.items()
    }
  return splits


def _tfds_label_info(source: Any) -> tuple[int | None, tuple[str, ...] | None]:
  """(num_classes, names) of a tfds source's ClassLabel (or Sequence(ClassLabel)) feature."""
  try:
    features = source.dataset_info.features
    feature = features["label"] if "label" in features else features["labels"]
  except (AttributeError, KeyError, TypeError):
    return None, None
  feature = getattr(feature, "feature", feature)  # Sequence(ClassLabel) wraps a ClassLabel.
  num_classes = getattr(feature, "num_classes", None)
  names = getattr(feature, "names", None)
  return num_classes, (tuple(names) if names and len(names) == num_classes else None)


def _records_to_labeled_images(
  records: Iterable[Mapping[str, Any]],
  num_classes: int | None,
  *,
  class_names: Sequence[str] | None = None,
  image_size: int | None = None,
  where: str = "tfds",
) -> LabeledImages:
  """Converts tfds-style records into LabeledImages.

  Args:
    records: dicts with "image" (uint8 [H, W, C] or [H, W]) and "label" (or "labels"): a class
      index, a list of class indices, or a 0/1 multi-hot vector [num_classes]. A dataset-wide
      rule tells lists from multi-hot vectors: bool/float vectors, or integer vectors that all
      have length num_classes and hold only 0/1, are multi-hot.
    num_classes: label width; None means largest index + 1.
    class_names: optional names, num_classes of them.
    image_size: resize every image to image_size x image_size (bilinear) when given.
    where: the data source, for error messages.

  Returns:
    LabeledImages with images [N, H, W, C] and labels [N, num_classes].
  """
  images, labels = [], []
  for i, record in enumerate(records):
    label_key = "label" if "label" in record else "labels"
    if "image" not in record or label_key not in record:
      raise UserError(
        f"{where}: record {i} has keys {sorted(record)}; expected 'image' and 'label'"
      )
    image = np.asarray(record["image"])
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
      raise UserError(
        f"{where}: record {i} has image {image.dtype} {image.shape}; expected uint8 [H, W, C]"
      )
    if image.ndim == 2:
      image = image[..., None]
    if image_size is not None:
      image = _resize(image[None], image_size)[0]
    if images and image.shape != images[0].shape:
      raise UserError(
        f"{where}: images differ in size (record 0 is {images[0].shape}, record {i} is "
        f"{image.shape}); set image_size (config.data.image_size) to resize them"
      )
    images.append(image)
    labels.append(np.asarray(record[label_key]))
  if not images:
    raise UserError(f"{where}: the dataset has no records")

  if all(label.ndim == 0 for label in labels):
    indices = np.array(labels)
    if num_classes is None:
      num_classes = int(indices.max()) + 1
    multi_hot = _to_multi_hot(indices, num_classes, where, f"{num_classes} classes")
  elif all(label.ndim == 1 for label in labels):
    multi_hot, num_classes = _vectors_to_multi_hot(labels, num_classes, where)
  else:
    raise UserError(
      f"{where}: labels mix shapes {sorted({label.shape for label in labels})}; expected a class "
      "index, a list of indices or a multi-hot vector per record"
    )
  if class_names is not None and len(class_names) != num_classes:
    class_names = None  # Names that do not match the labels would mislabel every class.
  return LabeledImages(
    images=np.stack(images),
    labels=multi_hot,
    class_names=None if class_names is None else tuple(class_names),
  )


def _vectors_to_multi_hot(
  labels: Sequence[np.ndarray], num_classes: int | None, where: str
) -> tuple[np.ndarray, int]:
  """Per-record label vectors (index lists or multi-hot) -> uint8 [N, L], L."""
  is_multi_hot = all(label.dtype.kind in "bf" for label in labels) or (
    num_classes is not None
    and all(len(label) == num_classes for label in labels)
    and all(((label == 0) | (label == 1)).all() for label in labels)
  )
  if is_multi_hot:
    lengths = {len(label) for label in labels}
    if len(lengths) > 1:
      raise UserError(f"{where}: multi-hot labels differ in length ({sorted(lengths)})")
    width = lengths.pop()
    return _to_multi_hot(np.stack(labels), width, where, f"{width} classes"), width
  for label in labels:
    if label.size and not np.issubdtype(label.dtype, np.integer):
      raise UserError(f"{where}: label lists have dtype {label.dtype}; expected class indices")
  if num_classes is None:
    num_classes = max((int(label.max()) for label in labels if label.size), default=-1) + 1
  multi_hot = np.zeros((len(labels), num_classes), np.uint8)
  for row, label in enumerate(labels):
    if label.size and (label.min() < 0 or label.max() >= num_classes):
      raise UserError(
        f"{where}: record {row} has class index {label.tolist()} outside [0, {num_classes})"
      )
    multi_hot[row, label.astype(np.int64)] = 1
  return multi_hot, num_classes


def _describe(x: Any) -> str:
  if isinstance(x, np.ndarray):
    return f"{x.dtype} array of shape {x.shape}"
  return type(x).__name__
