"""Random flip, crop and cutout of uint8 image batches, done inside the jitted train step."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_flip_and_crop(
  key: jax.Array, images: jnp.ndarray, *, flip: bool, crop_padding: int
) -> jnp.ndarray:
  """Per image: horizontal flip with probability 1/2, then a random crop after zero padding.

  Args:
    key: PRNG key.
    images: `[batch, H, W, C]`.
    flip: whether to flip.
    crop_padding: pad each side by this many pixels, then crop back to `H x W` at a random
      offset (0 disables cropping).

  Returns:
    `[batch, H, W, C]`, same dtype.
  """
  batch, height, width, _ = images.shape
  flip_key, crop_key = jax.random.split(key)
  if flip:
    do_flip = jax.random.bernoulli(flip_key, 0.5, (batch,))
    images = jnp.where(do_flip[:, None, None, None], images[:, :, ::-1, :], images)
  if crop_padding:
    p = crop_padding
    padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
    offsets = jax.random.randint(crop_key, (batch, 2), 0, 2 * p + 1)

    def crop(image, offset):
      return jax.lax.dynamic_slice(
        image, (offset[0], offset[1], 0), (height, width, image.shape[-1])
      )

    images = jax.vmap(crop)(padded, offsets)
  return images


def random_cutout(key: jax.Array, images: jnp.ndarray, *, size: int) -> jnp.ndarray:
  """Per image: zero a `size x size` square at a uniformly random centre (Cutout, DeVries and
  Taylor 2017); a square that crosses the border is clipped, as in the paper, so on average
  less than `size^2` pixels go. Zero is the value the crop pads with.

  Args:
    key: PRNG key.
    images: `[batch, H, W, C]`.
    size: side of the square in pixels (0 disables cutout).

  Returns:
    `[batch, H, W, C]`, same dtype.
  """
  if not size:
    return images
  batch, height, width, _ = images.shape
  centres = jax.random.randint(key, (batch, 2), 0, jnp.array([height, width]))
  starts = centres - size // 2  # [batch, 2]
  rows = jnp.arange(height)[None, :] - starts[:, :1]  # [batch, H]: row offset in the square
  cols = jnp.arange(width)[None, :] - starts[:, 1:]  # [batch, W]
  inside_rows = (rows >= 0) & (rows < size)
  inside_cols = (cols >= 0) & (cols < size)
  inside = inside_rows[:, :, None] & inside_cols[:, None, :]  # [batch, H, W]
  return jnp.where(inside[..., None], jnp.zeros_like(images), images)
