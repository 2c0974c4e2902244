"""Random flip, crop, cutout and colour jitter of uint8 image batches, done inside the jitted
train step; mixup of images with their targets, done by the objective that has targets to mix
(CNNH stage 2, `objectives.make_objective`)."""

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


def random_color_jitter(key: jax.Array, images: jnp.ndarray, *, strength: float) -> jnp.ndarray:
  """Per image: brightness, contrast and saturation each scaled by a factor drawn uniformly
  from [1 - strength, 1 + strength] (torchvision's `ColorJitter(s, s, s)`, in a fixed order):

    x <- b x;  x <- c (x - mean(gray(x))) + mean(gray(x));  x <- s (x - gray(x)) + gray(x)

  with gray(x) = 0.299 R + 0.587 G + 0.114 B per pixel, then clipped to [0, 255] and rounded
  back to uint8. Images with other than 3 channels get brightness and contrast only.

  Args:
    key: PRNG key.
    images: uint8 `[batch, H, W, C]`.
    strength: in [0, 1) (0 disables the jitter).

  Returns:
    uint8 `[batch, H, W, C]`.
  """
  if not strength:
    return images
  batch, channels = images.shape[0], images.shape[-1]
  factors = jax.random.uniform(key, (3, batch, 1, 1, 1), minval=1 - strength, maxval=1 + strength)
  x = images.astype(jnp.float32) * factors[0]

  def gray(x):  # [batch, H, W, 1]
    if channels != 3:
      return jnp.mean(x, axis=-1, keepdims=True)
    return x @ jnp.array([0.299, 0.587, 0.114], jnp.float32)[:, None]

  mean = jnp.mean(gray(x), axis=(1, 2, 3), keepdims=True)
  x = factors[1] * (x - mean) + mean
  if channels == 3:
    g = gray(x)
    x = factors[2] * (x - g) + g
  return jnp.round(jnp.clip(x, 0, 255)).astype(images.dtype)


def mixup(key: jax.Array, alpha: float, images: jnp.ndarray, *targets: jnp.ndarray):
  """Mixup (Zhang et al. 2018) of a batch with a random permutation of itself, per image:

    x_i <- lam_i x_i + (1 - lam_i) x_perm(i),   lam_i ~ Beta(alpha, alpha),

  and each array of `targets` (regression codes, multi-hot labels) mixed with the same lam_i
  and perm, so a mixed image is asked for the same mixture of its two sources' outputs.

  Args:
    key: PRNG key.
    alpha: > 0, the Beta distribution's parameters (1: lam uniform on [0, 1]).
    images: `[batch, H, W, C]` (uint8 or float in 0..255).
    *targets: `[batch, ...]` each.

  Returns:
    (float32 images `[batch, H, W, C]`, *float32 targets), same shapes.
  """
  batch = images.shape[0]
  lam_key, perm_key = jax.random.split(key)
  lam = jax.random.beta(lam_key, alpha, alpha, (batch,))
  perm = jax.random.permutation(perm_key, batch)

  def mix(x):
    x = x.astype(jnp.float32)
    weight = lam.reshape((batch,) + (1,) * (x.ndim - 1))
    return weight * x + (1.0 - weight) * x[perm]

  return (mix(images), *(mix(t) for t in targets))
