import jax
import numpy as np
import pytest

from hashing import augment


def images(batch=6, size=8, channels=3):
  return np.random.default_rng(0).integers(1, 256, (batch, size, size, channels), dtype=np.uint8)


def test_no_flip_no_crop_is_identity():
  x = images()
  out = augment.random_flip_and_crop(jax.random.key(0), x, flip=False, crop_padding=0)
  np.testing.assert_array_equal(out, x)


def test_flip_gives_original_or_mirror_and_mixes_both():
  x = images(batch=32)
  out = np.asarray(augment.random_flip_and_crop(jax.random.key(1), x, flip=True, crop_padding=0))
  same = [np.array_equal(o, i) for o, i in zip(out, x, strict=True)]
  mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x, strict=True)]
  assert all(s or m for s, m in zip(same, mirrored, strict=True))
  assert any(same) and any(mirrored)


def test_crop_is_a_window_of_the_zero_padded_image():
  x, p = images(), 2
  out = np.asarray(augment.random_flip_and_crop(jax.random.key(2), x, flip=False, crop_padding=p))
  assert out.shape == x.shape and out.dtype == np.uint8
  padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  for o, pad in zip(out, padded, strict=True):
    windows = [pad[i : i + 8, j : j + 8] for i in range(2 * p + 1) for j in range(2 * p + 1)]
    assert any(np.array_equal(o, w) for w in windows)


def test_cutout_zeroes_one_clipped_square_per_image_and_keeps_the_rest():
  x, size = images(batch=64), 4  # pixel values >= 1, so zeros come from the cutout only
  out = np.asarray(augment.random_cutout(jax.random.key(3), x, size=size))
  assert out.shape == x.shape and out.dtype == np.uint8
  full_squares = 0
  for o, i in zip(out, x, strict=True):
    erased = np.all(o == 0, axis=-1)
    np.testing.assert_array_equal(o[~erased], i[~erased])
    rows, cols = np.nonzero(erased)
    # One axis-aligned rectangle, at most size x size (clipped at the border), never empty
    # (the centre lies inside the image).
    assert rows.size and rows.size == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
    assert np.ptp(rows) < size and np.ptp(cols) < size
    full_squares += rows.size == size * size
  assert 0 < full_squares < len(x)  # centres near the border clip, others do not


def test_cutout_of_zero_size_is_identity():
  x = images()
  np.testing.assert_array_equal(augment.random_cutout(jax.random.key(0), x, size=0), x)


def color_jitter_reference(images, factors):
  """Plain NumPy colour jitter with given factors `[3, batch]` (brightness, contrast,
  saturation), in the docstring's order."""
  out = []
  for image, (b, c, s) in zip(images.astype(np.float64), factors.T, strict=True):
    x = image * b
    gray = x @ [0.299, 0.587, 0.114] if x.shape[-1] == 3 else x.mean(axis=-1)
    x = c * (x - gray.mean()) + gray.mean()
    if x.shape[-1] == 3:
      gray = x @ [0.299, 0.587, 0.114]
      x = s * (x - gray[..., None]) + gray[..., None]
    out.append(np.round(np.clip(x, 0, 255)))
  return np.stack(out)


@pytest.mark.parametrize("channels", [3, 1])
def test_color_jitter_matches_a_numpy_reference(channels):
  x, strength, key = images(batch=16, channels=channels), 0.4, jax.random.key(4)
  out = np.asarray(augment.random_color_jitter(key, x, strength=strength))
  factors = np.asarray(
    jax.random.uniform(key, (3, 16, 1, 1, 1), minval=1 - strength, maxval=1 + strength)
  ).reshape(3, 16)
  assert out.dtype == np.uint8 and out.shape == x.shape
  assert np.all((factors >= 0.6) & (factors <= 1.4)) and factors.std() > 0.1
  # float32 against float64 may round a value at .5 the other way
  np.testing.assert_allclose(out, color_jitter_reference(x, factors), atol=1)
  assert np.mean(out != x) > 0.5


def test_color_jitter_of_zero_strength_is_identity():
  x = images()
  np.testing.assert_array_equal(augment.random_color_jitter(jax.random.key(0), x, strength=0), x)


def test_mixup_mixes_images_and_targets_with_the_same_weights_and_pairs():
  batch = 64
  # Image i is the constant 3 * i and its target row the one-hot of i, so a mixed target row
  # holds the weights of the two source images, which must give the mixed image's value.
  sources = np.repeat(3 * np.arange(batch, dtype=np.uint8), 4 * 4 * 3).reshape(batch, 4, 4, 3)
  one_hot = np.eye(batch, dtype=np.float32)
  codes = np.where(np.random.default_rng(0).random((batch, 5)) < 0.5, -1.0, 1.0)
  mixed, weights, mixed_codes = augment.mixup(jax.random.key(0), 1.0, sources, one_hot, codes)
  mixed, weights, mixed_codes = map(np.asarray, (mixed, weights, mixed_codes))
  assert mixed.dtype == np.float32 and mixed.shape == sources.shape
  assert np.all(weights >= 0) and np.all((weights > 0).sum(axis=1) <= 2)
  np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(mixed, np.einsum("bj,jhwc->bhwc", weights, sources), rtol=1e-5)
  np.testing.assert_allclose(mixed_codes, weights @ codes, rtol=1e-5, atol=1e-6)
  # Every image keeps weight lam_i on itself and is paired with one other image (a permutation).
  lam = np.diag(weights)
  partners = np.argmax(weights - np.diag(lam), axis=1)
  paired = lam < 1
  assert len(set(partners[paired])) == paired.sum()


@pytest.mark.parametrize("alpha, mean_distance_to_end", [(1.0, 0.25), (0.2, 0.1)])
def test_mixup_weights_follow_beta_alpha_alpha(alpha, mean_distance_to_end):
  batch = 4096
  one_hot = np.eye(batch, dtype=np.float32)
  _, weights = augment.mixup(jax.random.key(1), alpha, np.zeros((batch, 1, 1, 1)), one_hot)
  lam = np.diag(np.asarray(weights))
  # Beta(a, a): mean 1/2; E min(lam, 1 - lam) = 1/4 for a = 1 (uniform), about 0.1 for a = 0.2.
  assert abs(lam.mean() - 0.5) < 0.02
  assert abs(np.minimum(lam, 1 - lam).mean() - mean_distance_to_end) < 0.02
