"""Image search with a trained run: encode a folder into an index file, query it with images.

  model = TrainedModel.load("runs/dsh/bits-48")       # config.json, results.json, params.msgpack
  idx = build_index(model, "photos/")                 # every PNG/JPEG under photos/, recursively
  index.save("photos.idx", idx)
  idx = index.load("photos.idx", model_hash=model.model_hash)
  hits = search(idx, model, ["query.png"], top=10)    # [(ids, distances)] per query image
  write_grid("grid.png", ["query.png"], hits, idx)

Images are read with PIL, converted to the model's channels (grey or RGB) and resized
(bilinear) to the training image shape recorded in results.json, as the training data was.
`python -m hashing.search_cli` is the command-line front end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import ml_collections
import numpy as np
from PIL import Image, ImageDraw

from hashing import index as hindex
from hashing import io as hio
from hashing import metrics, models, retrieval
from hashing.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def model_hash(config: dict, results: dict, image_shape: Sequence[int], params: bytes) -> str:
  """SHA-256 of what determines the codes: model config, input statistics, shape, parameters."""
  described = {
    "model": config["model"],
    "pixel_mean": results["pixel_mean"],
    "pixel_std": results["pixel_std"],
    "image_shape": list(image_shape),
  }
  digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode("utf-8"))
  digest.update(params)
  return digest.hexdigest()


@dataclasses.dataclass(frozen=True, eq=False)
class TrainedModel:
  """The final model of a training run, ready to encode images.

  Attributes:
    model: the Flax module; params: its parameters.
    num_bits: code length q.
    image_shape: (H, W, C) the model was trained on.
    model_hash: `model_hash(...)`, stored in index files to match them with their model.
    workdir: the run's directory.
  """

  model: models.HashNet
  params: Any
  num_bits: int
  image_shape: tuple[int, int, int]
  model_hash: str
  workdir: str

  @classmethod
  def load(cls, workdir: str, *, image_shape: Sequence[int] | None = None) -> TrainedModel:
    """Rebuilds the model of a finished run in `workdir`.

    Args:
      workdir: a run's workdir (for a several-bit-length run, one `bits-<q>` sub-workdir).
      image_shape: (H, W, C) override, for runs whose results.json predates `image_shape`.

    Raises:
      UserError: the workdir is not a finished run, or its files do not fit together.
    """
    workdir = os.fspath(workdir)
    names = ("config.json", "results.json", "params.msgpack")
    missing = [n for n in names if not os.path.isfile(os.path.join(workdir, n))]
    if missing:
      subruns = sorted(p.name for p in Path(workdir).glob("bits-*") if p.is_dir())
      hint = (
        f"it holds several bit lengths: pass one of them, e.g. --workdir={workdir}/{subruns[0]}"
        if subruns
        else "pass the workdir of a finished training run (launch.py --workdir)"
      )
      raise UserError(f"{workdir!r} has no {', '.join(missing)}; {hint}")
    try:
      with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
      with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
      with open(os.path.join(workdir, "params.msgpack"), "rb") as f:
        params_bytes = f.read()
      model_config = ml_collections.ConfigDict(config["model"])
      mean, std = results["pixel_mean"], results["pixel_std"]
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise UserError(f"cannot read the run in {workdir!r} ({e!r}); is it complete?") from None
    if image_shape is None:
      image_shape = results.get("image_shape")
    if image_shape is None:
      raise UserError(
        f"{workdir}/results.json has no image_shape (a run of an older version); pass the "
        "training image shape, e.g. --image-shape=32,32,3"
      )
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 3 or min(image_shape) < 1 or image_shape[2] not in (1, 3):
      raise UserError(f"image shape {image_shape} must be H,W,C with C = 1 (grey) or 3 (RGB)")
    model = models.build_model(model_config, mean, std, results.get("num_classes", 0))
    template = model.init(jax.random.key(0), np.zeros((1, *image_shape), np.uint8))
    try:
      params = flax.serialization.from_bytes(template, params_bytes)
    except (ValueError, KeyError, TypeError) as e:
      raise UserError(
        f"{workdir}/params.msgpack does not fit the model of its config.json and image shape "
        f"{image_shape} ({e}); is the image shape right?"
      ) from None
    shapes = jax.tree.map(np.shape, params)
    if shapes != jax.tree.map(np.shape, template):
      raise UserError(
        f"{workdir}/params.msgpack has parameter shapes that do not fit image shape "
        f"{image_shape}; pass the training image shape"
      )
    return cls(
      model=model,
      params=params,
      num_bits=int(model_config.bits),
      image_shape=image_shape,
      model_hash=model_hash(config, results, image_shape, params_bytes),
      workdir=workdir,
    )

  def encode(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Packed codes uint8 `[N, ceil(q / 8)]` of uint8 images `[N, H, W, C]`."""
    if not len(images):
      return np.zeros((0, -(-self.num_bits // 8)), np.uint8)
    batch_size = max(1, min(batch_size, len(images)))
    return metrics.pack_codes(models.encode(self.model, self.params, images, batch_size))

  def encode_files(self, paths: Sequence[str | os.PathLike], batch_size: int = 256) -> np.ndarray:
    """Packed codes of image files, read `batch_size` at a time (memory stays bounded)."""
    parts = [np.zeros((0, -(-self.num_bits // 8)), np.uint8)]
    for start in range(0, len(paths), batch_size):
      batch = paths[start : start + batch_size]
      images = np.stack([read_image(p, self.image_shape) for p in batch])
      parts.append(self.encode(images, batch_size))
    return np.concatenate(parts)


def read_image(path: str | os.PathLike, image_shape: Sequence[int]) -> np.ndarray:
  """One image file as uint8 `[H, W, C]`: converted to grey (C = 1) or RGB, resized bilinearly."""
  height, width, channels = image_shape
  try:
    with Image.open(path) as image:
      image = image.convert("L" if channels == 1 else "RGB")
      if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
      array = np.asarray(image, dtype=np.uint8)
  except FileNotFoundError:
    raise UserError(f"image {os.fspath(path)!r} does not exist") from None
  except (OSError, ValueError) as e:
    raise UserError(f"cannot read image {os.fspath(path)!r} ({e}); is it a PNG or JPEG?") from None
  return array.reshape(height, width, channels)


def list_images(folder: str | os.PathLike) -> list[str]:
  """PNG/JPEG files under `folder` (recursively, hidden ones skipped), relative, sorted."""
  root = Path(folder)
  if not root.is_dir():
    raise UserError(f"{os.fspath(folder)!r} is not a directory of images")
  found = sorted(
    p.relative_to(root).as_posix()
    for p in root.rglob("*")
    if p.is_file()
    and p.suffix.lower() in IMAGE_SUFFIXES
    and not any(part.startswith(".") for part in p.relative_to(root).parts)
  )
  if not found:
    raise UserError(f"{os.fspath(folder)!r} holds no PNG or JPEG files")
  return found


def build_index(model: TrainedModel, folder: str | os.PathLike, batch_size: int = 256):
  """A `index.CodeIndex` of every image under `folder`; ids are paths relative to it."""
  ids = list_images(folder)
  root = Path(folder).resolve()
  codes = model.encode_files([root / i for i in ids], batch_size)
  return hindex.CodeIndex(
    codes=codes,
    ids=tuple(ids),
    num_bits=model.num_bits,
    model_hash=model.model_hash,
    metadata={
      "root": str(root),
      "workdir": str(Path(model.workdir).resolve()),
      "image_shape": list(model.image_shape),
    },
  )


def search(
  code_index: hindex.CodeIndex,
  model: TrainedModel,
  query_paths: Sequence[str | os.PathLike],
  *,
  top: int = 10,
  radius: int | None = None,
) -> list[tuple[list[str], np.ndarray]]:
  """Nearest indexed items of each query image: [(ids, distances int32)], by (distance, index).

  With `radius`, every item within that Hamming distance (hash tables for radius <= 2)
  instead of the `top` nearest.
  """
  if code_index.model_hash != model.model_hash:
    raise UserError(
      "the index was built with another model than the one in "
      f"{model.workdir!r}; use the matching --workdir or rebuild the index"
    )
  queries = model.encode_files(list(query_paths))
  engine = retrieval.HammingIndex(code_index.codes, code_index.num_bits)
  if radius is not None:
    found = engine.radius_search(queries, radius)
    pairs = [found[i] for i in range(len(found))]
  else:
    indices, distances = engine.knn(queries, top)
    pairs = list(zip(indices, distances, strict=True))
  return [([code_index.ids[j] for j in ix], dist) for ix, dist in pairs]


def write_grid(
  path: str | os.PathLike,
  query_paths: Sequence[str | os.PathLike],
  results: Sequence[tuple[Sequence[str], np.ndarray]],
  code_index: hindex.CodeIndex,
  *,
  columns: int = 10,
  tile: int = 96,
) -> None:
  """A PNG grid: one row per query, the query image then its first `columns` results.

  Each result is captioned with its Hamming distance; files are looked up under the index's
  root folder (a missing one shows as a grey tile).
  """
  root = Path(code_index.metadata.get("root", "."))
  caption = 14
  gap = 8  # between the query and its results
  width = tile * (columns + 1) + gap
  grid = Image.new("RGB", (width, (tile + caption) * max(1, len(query_paths))), "white")
  draw = ImageDraw.Draw(grid)
  for row, (query, (ids, dist)) in enumerate(zip(query_paths, results, strict=True)):
    y = row * (tile + caption)
    grid.paste(_tile(Path(query), tile), (0, y))
    draw.text((2, y + tile), "query", fill="black")
    for col, (item, d) in enumerate(zip(list(ids)[:columns], dist, strict=False)):
      x = tile * (col + 1) + gap
      grid.paste(_tile(root / item, tile), (x, y))
      draw.text((x + 2, y + tile), f"d={int(d)}", fill="black")
  with hio.atomic_open(path, "wb") as f:
    grid.save(f, format="PNG")


def _tile(path: Path, size: int) -> Image.Image:
  """The image scaled to fit `size` x `size` (aspect kept, nearest: small images stay crisp)."""
  tile = Image.new("RGB", (size, size), "white")
  try:
    with Image.open(path) as image:
      image = image.convert("RGB")
      scale = size / max(image.size)
      shape = tuple(max(1, round(s * scale)) for s in image.size)
      image = image.resize(shape, Image.Resampling.NEAREST)
  except OSError:
    return Image.new("RGB", (size, size), (160, 160, 160))
  tile.paste(image, ((size - shape[0]) // 2, (size - shape[1]) // 2))
  return tile
