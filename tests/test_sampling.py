import numpy as np
import pytest

from hashing import sampling
from hashing.errors import UserError


def test_batch_indices_cover_each_image_once_per_epoch_and_depend_on_seed_and_step_only():
  epoch = [sampling.batch_indices(7, step, 100, 30) for step in range(3)]  # 3 batches of 30
  assert len(np.unique(np.concatenate(epoch))) == 90
  np.testing.assert_array_equal(sampling.batch_indices(7, 1, 100, 30), epoch[1])
  assert not np.array_equal(sampling.batch_indices(7, 3, 100, 30), epoch[0])  # reshuffled
  assert not np.array_equal(sampling.batch_indices(8, 0, 100, 30), epoch[0])


def shares_label(labels, i, j):
  return bool((labels[i] & labels[j]).any())


@pytest.mark.parametrize("multi_label", [False, True])
def test_triplets_have_a_sharing_positive_and_a_disjoint_negative(multi_label):
  rng = np.random.default_rng(0)
  if multi_label:
    labels = (rng.random((300, 6)) < 0.25).astype(np.uint8)
  else:
    labels = np.eye(5, dtype=np.uint8)[rng.integers(0, 5, 300)]
  sampler = sampling.TripletSampler(labels, seed=3)
  for step in range(5):
    for a, p, n in sampler(step, 64):
      assert a != p
      assert shares_label(labels, a, p)
      assert not shares_label(labels, a, n)
  np.testing.assert_array_equal(sampler(4, 64), sampling.TripletSampler(labels, seed=3)(4, 64))
  assert not np.array_equal(sampler(4, 64), sampler(5, 64))


def test_positives_and_negatives_are_uniform_over_their_candidates():
  # Anchor 0 (labels {0, 1}) has positives 1..5 (share 0 or 1), negatives 6..9 (label 2 only,
  # or no label). Candidates come from groups of different sizes: uniform means per image.
  labels = np.array(
    [[1, 1, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0],
     [0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 0]], np.uint8,
  )  # fmt: skip
  sampler = sampling.TripletSampler(labels, seed=0)
  counts_p, counts_n = np.zeros(10), np.zeros(10)
  for step in range(4000):
    triplets = sampler(step, 8)
    mine = triplets[triplets[:, 0] == 0]
    np.add.at(counts_p, mine[:, 1], 1)
    np.add.at(counts_n, mine[:, 2], 1)
  total = counts_p.sum()
  np.testing.assert_array_equal(counts_p[[0, 6, 7, 8, 9]], 0)
  np.testing.assert_array_equal(counts_n[:6], 0)
  # Binomial spread: 5 sigma bounds around total / 5 and total / 4.
  for counts, k in ((counts_p[1:6], 5), (counts_n[6:], 4)):
    expected = total / k
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))


def test_images_without_positive_or_negative_are_not_anchors():
  labels = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 1]], np.uint8)
  # Image 3 shares a label with every other image: it has no negative, so it never anchors.
  sampler = sampling.TripletSampler(labels, seed=0)
  np.testing.assert_array_equal(sorted(sampler.anchors), [0, 1, 2])
  with pytest.raises(UserError, match="positive"):
    sampling.TripletSampler(np.eye(4, dtype=np.uint8), seed=0)
