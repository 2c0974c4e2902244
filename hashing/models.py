"""Flax Linen hashing networks: backbone -> head -> real-valued codes `[batch, bits]`.

Pure functions: `params = model.init(key, images)`, `codes = model.apply(params, images)`.
Images enter as uint8 `[batch, height, width, channels]`; normalisation happens inside the
model so that every caller (training, evaluation, indexing) sees the same input transform.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hashing.errors import UserError


class DSHBackbone(nn.Module):
  """The DSH network of Liu et al. (CVPR 2016) up to its 500-unit hidden layer.

  conv 32@5x5 -> max-pool 3/2 -> ReLU -> conv 32@5x5 -> ReLU -> avg-pool 3/2 -> conv 64@5x5
  -> ReLU -> avg-pool 3/2 -> FC 500 -> ReLU. 'SAME' padding everywhere, so pooling rounds up
  like Caffe's ceil mode (32 -> 16 -> 8 -> 4); any image size and channel count works.
  Output: features `[batch, hidden]`.
  """

  widths: Sequence[int] = (32, 32, 64)
  hidden: int = 500

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    pool = dict(window_shape=(3, 3), strides=(2, 2), padding="SAME")
    x = nn.Conv(self.widths[0], (5, 5), padding="SAME")(x)
    x = nn.relu(nn.max_pool(x, **pool))
    x = nn.relu(nn.Conv(self.widths[1], (5, 5), padding="SAME")(x))
    x = nn.avg_pool(x, **pool)
    x = nn.relu(nn.Conv(self.widths[2], (5, 5), padding="SAME")(x))
    x = nn.avg_pool(x, **pool)
    x = x.reshape((x.shape[0], -1))
    return nn.relu(nn.Dense(self.hidden)(x))


class FCHead(nn.Module):
  """Fully-connected encode: features `[batch, d]` -> `[batch, bits]`."""

  bits: int

  @nn.compact
  def __call__(self, features: jnp.ndarray) -> jnp.ndarray:
    return nn.Dense(self.bits)(features)


OUTPUTS = {"none": lambda x: x, "tanh": jnp.tanh, "sigmoid": nn.sigmoid}


class HashNet(nn.Module):
  """Normalise uint8 images, run backbone and head, apply the output activation.

  `pixel_mean`/`pixel_std` are per-channel statistics of the training images, kept as static
  attributes (not parameters) so that they travel with the model definition.
  Input `[batch, H, W, C]` uint8 (or float in 0..255); output codes `[batch, bits]` float32.
  """

  backbone: nn.Module
  head: nn.Module
  output: str = "none"
  pixel_mean: Sequence[float] = (0.0,)
  pixel_std: Sequence[float] = (255.0,)

  def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
    x = (images.astype(jnp.float32) - jnp.asarray(self.pixel_mean)) / jnp.asarray(self.pixel_std)
    return OUTPUTS[self.output](self.head(self.backbone(x)))


BACKBONES = {"dsh": DSHBackbone}
HEADS = {"fc": FCHead}


def build_model(
  model_config, pixel_mean: Sequence[float] = (0.0,), pixel_std: Sequence[float] = (255.0,)
) -> HashNet:
  """Builds a `HashNet` from `config.model` (fields `backbone`, `head`, `bits`, `output`)."""
  for field, table in (("backbone", BACKBONES), ("head", HEADS)):
    if model_config[field] not in table:
      raise UserError(
        f"config.model.{field}={model_config[field]!r} is unknown; choose one of {sorted(table)}."
      )
  if model_config.output not in OUTPUTS:
    raise UserError(
      f"config.model.output={model_config.output!r} is unknown; choose one of {sorted(OUTPUTS)}."
    )
  if model_config.bits <= 0:
    raise UserError(f"config.model.bits={model_config.bits} must be a positive number of bits.")
  return HashNet(
    backbone=BACKBONES[model_config.backbone](),
    head=HEADS[model_config.head](bits=model_config.bits),
    output=model_config.output,
    pixel_mean=tuple(float(m) for m in pixel_mean),
    pixel_std=tuple(float(s) for s in pixel_std),
  )


@functools.lru_cache(maxsize=8)
def _jitted_apply(model: HashNet):
  # Modules hash by their definition: one compiled apply per model across calls (a fresh
  # `jax.jit(model.apply)` per call would trace and compile again).
  return jax.jit(model.apply)


def encode(model: HashNet, params, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
  """Real-valued codes `[N, bits]` of uint8 images `[N, H, W, C]`, in fixed-size chunks.

  The last chunk is padded to `batch_size` so the jitted apply compiles once.
  """
  apply = _jitted_apply(model)
  out = []
  for start in range(0, images.shape[0], batch_size):
    chunk = images[start : start + batch_size]
    pad = batch_size - chunk.shape[0]
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
    out.append(np.asarray(apply(params, chunk))[: batch_size - pad])
  return np.concatenate(out)
