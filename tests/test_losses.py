import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from hashing import losses
from hashing.errors import UserError


def dsh_loss_reference(codes, labels, margin, alpha):
  """Plain loops over pairs i < j, exactly the paper's per-pair formula."""
  codes, labels = np.asarray(codes, np.float64), np.asarray(labels)
  total, pairs = 0.0, 0
  for i in range(len(codes)):
    for j in range(i + 1, len(codes)):
      similar = float((labels[i] * labels[j]).sum() > 0)
      d = float(((codes[i] - codes[j]) ** 2).sum())
      reg = np.abs(np.abs(codes[i]) - 1).sum() + np.abs(np.abs(codes[j]) - 1).sum()
      total += 0.5 * similar * d + 0.5 * (1 - similar) * max(margin - d, 0.0) + alpha * reg
      pairs += 1
  return total / pairs


def random_batch(seed, batch=12, bits=16, num_labels=5, multi_label=False):
  rng = np.random.default_rng(seed)
  codes = rng.normal(size=(batch, bits)).astype(np.float32)
  if multi_label:
    labels = (rng.random((batch, num_labels)) < 0.3).astype(np.uint8)
  else:
    labels = np.eye(num_labels, dtype=np.uint8)[rng.integers(0, num_labels, batch)]
  return codes, labels


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dsh_loss_matches_reference(seed, multi_label):
  codes, labels = random_batch(seed, multi_label=multi_label)
  for margin, alpha in ((32.0, 0.01), (8.0, 0.5), (0.0, 0.0)):
    got = losses.dsh_loss(codes, labels, margin=margin, alpha=alpha)
    np.testing.assert_allclose(got, dsh_loss_reference(codes, labels, margin, alpha), rtol=1e-5)


def test_dsh_loss_same_under_jit_and_without():
  codes, labels = random_batch(3)
  fn = lambda c, y: losses.dsh_loss(c, y, margin=32.0, alpha=0.01)
  chex.assert_trees_all_close(jax.jit(fn)(codes, labels), fn(codes, labels), rtol=1e-6)


def test_dsh_loss_gradients_are_finite_and_regularizer_pulls_to_plus_minus_one():
  codes, labels = random_batch(4)
  grads = jax.grad(lambda c: losses.dsh_loss(c, labels, margin=32.0, alpha=0.01))(codes)
  assert np.all(np.isfinite(grads))
  # Regularizer alone: gradient sign pushes |b| towards 1 (not zero, unlike |1 - sign(b)|).
  b = jnp.array([[0.5, -0.5, 2.0, -2.0]])
  reg_grad = jax.grad(
    lambda c: losses.dsh_loss(jnp.concatenate([c, c]), np.ones((2, 1)), margin=0.0, alpha=1.0)
  )(b)
  np.testing.assert_array_equal(np.sign(reg_grad), [[-1, 1, 1, -1]])


@pytest.mark.parametrize("labels, closer", [([[1, 0], [1, 0]], True), ([[1, 0], [0, 1]], False)])
def test_similar_pairs_attract_and_dissimilar_pairs_within_margin_repel(labels, closer):
  codes = jnp.array([[0.5, 0.5], [0.4, 0.3]])
  grads = jax.grad(lambda c: losses.dsh_loss(c, np.array(labels), margin=8.0, alpha=0.0))(codes)
  distance = lambda c: float(jnp.sum((c[0] - c[1]) ** 2))
  assert (distance(codes - 0.01 * grads) < distance(codes)) == closer


def test_squared_distances_and_similarity():
  codes, labels = random_batch(5, multi_label=True)
  d = losses.squared_distances(jnp.asarray(codes))
  ref = ((codes[:, None, :] - codes[None, :, :]) ** 2).sum(-1)
  np.testing.assert_allclose(d, ref, rtol=1e-4, atol=1e-4)
  s = losses.similarity(labels)
  np.testing.assert_array_equal(s, (labels.astype(int) @ labels.T.astype(int) > 0).astype(float))


def triplet_reference(codes, labels, margin, mining):
  """Plain loops over every (anchor, positive, negative) of the batch, per the docstring."""
  codes, labels = np.asarray(codes, np.float64), np.asarray(labels)
  n = len(codes)
  d = lambda i, j: float(((codes[i] - codes[j]) ** 2).sum())
  shares = lambda i, j: bool((labels[i] * labels[j]).sum() > 0)
  hinge = lambda a, p, neg: max(0.0, margin + d(a, p) - d(a, neg))
  terms = []
  for a in range(n):
    pos = [p for p in range(n) if p != a and shares(a, p)]
    neg = [k for k in range(n) if not shares(a, k)]
    if not pos or not neg:
      continue
    if mining == "all":
      terms += [hinge(a, p, k) for p in pos for k in neg]
    elif mining == "hard":
      terms.append(hinge(a, max(pos, key=lambda p: d(a, p)), min(neg, key=lambda k: d(a, k))))
    else:  # semihard
      for p in pos:
        farther = [k for k in neg if d(a, k) > d(a, p)]
        k = min(farther, key=lambda k: d(a, k)) if farther else max(neg, key=lambda k: d(a, k))
        terms.append(hinge(a, p, k))
  return float(np.mean(terms)) if terms else 0.0


def test_triplet_loss_matches_reference():
  rng = np.random.default_rng(0)
  a, p, n = rng.random((3, 10, 12)).astype(np.float32)
  for margin in (0.0, 1.0, 4.0):
    expected = np.mean(
      [
        max(0.0, margin - (((a[t] - n[t]) ** 2).sum() - ((a[t] - p[t]) ** 2).sum()))
        for t in range(10)
      ]
    )
    np.testing.assert_allclose(losses.triplet_loss(a, p, n, margin=margin), expected, rtol=1e-5)


@pytest.mark.parametrize("mining", losses.MINING)
@pytest.mark.parametrize("multi_label", [False, True])
def test_batch_triplet_loss_matches_reference(mining, multi_label):
  for seed in range(3):
    codes, labels = random_batch(seed, batch=10, bits=6, multi_label=multi_label)
    for margin in (0.5, 4.0):
      got = losses.batch_triplet_loss(codes, labels, margin=margin, mining=mining)
      want = triplet_reference(codes, labels, margin, mining)
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mining", losses.MINING)
def test_batch_triplet_loss_jit_finite_gradients_and_no_triplet_case(mining):
  codes, labels = random_batch(7, multi_label=True)
  fn = lambda c, y: losses.batch_triplet_loss(c, y, margin=2.0, mining=mining)
  chex.assert_trees_all_close(jax.jit(fn)(codes, labels), fn(codes, labels), rtol=1e-6)
  assert np.all(np.isfinite(jax.grad(fn)(codes, labels)))
  one_class = np.ones((len(codes), 1), np.uint8)  # no negatives anywhere: no triplet
  assert float(fn(codes, one_class)) == 0.0
  assert np.all(np.isfinite(jax.grad(fn)(codes, one_class)))


def test_bit_spread_loss_matches_reference_and_revives_only_narrow_bits():
  rng = np.random.default_rng(0)
  codes = rng.random((64, 4)).astype(np.float32)  # uniform on [0, 1]: std about 0.29
  codes[:, 0] = 0.3 + 0.01 * rng.standard_normal(64)  # a nearly constant bit
  codes[:, 1] = rng.integers(0, 2, 64)  # a balanced binary bit: std about 0.5
  for min_std in (0.0, 0.25, 0.4):
    want = np.mean(np.maximum(min_std - np.sqrt(codes.var(axis=0) + 1e-4), 0.0))
    got = losses.bit_spread_loss(codes, min_std=min_std)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  grad = np.asarray(jax.grad(lambda c: losses.bit_spread_loss(c, min_std=0.4))(codes))
  # Only the bits narrower than min_std get a gradient, and a descent step widens them.
  np.testing.assert_array_equal(grad[:, 1], 0.0)
  stepped = codes - 10.0 * grad
  assert stepped[:, 0].std() > codes[:, 0].std() and stepped[:, 2].std() > codes[:, 2].std()


def test_quantization_loss_is_the_distance_to_the_nearer_binary_value():
  rng = np.random.default_rng(1)
  sigmoid_codes = rng.random((8, 5)).astype(np.float32)
  want = np.mean([[min(s, 1.0 - s) for s in row] for row in sigmoid_codes])
  got = losses.quantization_loss(sigmoid_codes, levels=(0.0, 1.0))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # With levels +-1 it is DSH's regularizer | |b| - 1 |, averaged instead of summed over bits.
  real_codes = 3.0 * rng.standard_normal((8, 5)).astype(np.float32)
  got = losses.quantization_loss(real_codes, levels=(-1.0, 1.0))
  np.testing.assert_allclose(got, np.mean(np.abs(np.abs(real_codes) - 1.0)), rtol=1e-6)
  binary = rng.integers(0, 2, (8, 5)).astype(np.float32)
  assert float(losses.quantization_loss(binary, levels=(0.0, 1.0))) == 0.0


def test_unknown_mining_and_negative_margin_are_user_errors():
  codes, labels = random_batch(0)
  with pytest.raises(UserError, match="mining"):
    losses.batch_triplet_loss(codes, labels, margin=1.0, mining="hardest")
  config = ml_collections.ConfigDict({"name": "triplet", "margin": -1.0})
  with pytest.raises(UserError, match="margin"):
    losses.check_loss_config(config)
  with pytest.raises(UserError, match="name"):
    losses.check_loss_config(ml_collections.ConfigDict({"name": "contrastive"}))
  config = ml_collections.ConfigDict({"name": "triplet", "label_smoothing": 1.0})
  with pytest.raises(UserError, match="label_smoothing"):
    losses.check_loss_config(config)
