"""Which training images each step sees: shuffled batches, and explicit random triplets.

Every batch is a function of (seed, step) alone, so that a resumed run sees the same batches.
"""

from __future__ import annotations

import functools

import numpy as np

from hashing.errors import UserError


@functools.lru_cache(maxsize=2)
def _epoch_permutation(seed: int, epoch: int, num_images: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_images)


def batch_indices(seed: int, step: int, num_images: int, batch_size: int) -> np.ndarray:
  """Training-image indices `[batch_size]` of `step`: sampling without replacement per epoch.

  Epoch e = step // (num_images // batch_size) uses the permutation seeded by (seed, e); the
  last incomplete batch of each epoch is dropped.
  """
  steps_per_epoch = num_images // batch_size
  epoch, position = divmod(step, steps_per_epoch)
  return _epoch_permutation(seed, epoch, num_images)[
    position * batch_size : (position + 1) * batch_size
  ]


class TripletSampler:
  """Random triplets (anchor, positive, negative) from multi-hot labels `[N, L]`.

  The positive is uniform over the other images that share a label with the anchor, the
  negative uniform over the images that share none (multi-label aware). Anchors run through
  shuffled epochs of the images that have both a positive and a negative.

  Images are grouped by their distinct label vector (G groups: the classes, for single-label
  data), so one step costs O(batch * G * L) instead of comparing each anchor with all N images:
  a group is drawn with probability proportional to its number of candidates, then an image
  uniformly inside it, which is exactly uniform over the candidates.
  """

  def __init__(self, labels: np.ndarray, seed: int):
    labels = np.asarray(labels) > 0
    unique, group = np.unique(labels, axis=0, return_inverse=True)
    self._unique = unique.astype(np.float32)  # [G, L]
    self._group = group.reshape(-1)  # [N] group of each image
    # Images sorted by group: group g owns members[start[g] : start[g] + count[g]].
    self._members = np.argsort(self._group, kind="stable")
    self._count = np.bincount(self._group, minlength=len(unique))
    self._start = np.concatenate([[0], np.cumsum(self._count)[:-1]])
    self._rank = np.empty_like(self._group)  # position of each image inside its group
    sorted_groups = self._group[self._members]
    self._rank[self._members] = np.arange(len(self._group)) - self._start[sorted_groups]
    self._seed = seed

    related = self._unique @ self._unique.T > 0  # [G, G]: share a label
    positives = related @ self._count - 1  # minus the anchor itself
    negatives = (~related) @ self._count
    usable = (positives > 0) & (negatives > 0)
    self.anchors = np.flatnonzero(usable[self._group])  # images that can anchor a triplet
    if not self.anchors.size:
      raise UserError(
        "no training image has both a positive (another image sharing a label) and a negative "
        "(an image sharing none); triplet training needs at least two images of each of two "
        "classes."
      )

  def _draw(self, rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """Per row of weights `[B, G]` (candidates per group), a group index `[B]` drawn with
    probability proportional to its weight, and a uniform position inside the candidates."""
    cumulative = np.cumsum(weights, axis=1)
    target = rng.integers(0, cumulative[:, -1])  # [B] in [0, total)
    group = (cumulative <= target[:, None]).sum(axis=1)  # first group whose cumsum > target
    before = cumulative[np.arange(len(group)), group] - weights[np.arange(len(group)), group]
    return group, target - before

  def __call__(self, step: int, batch_size: int) -> np.ndarray:
    """Triplets `[batch_size, 3]` of image indices (anchor, positive, negative) for `step`."""
    anchors = self.anchors[batch_indices(self._seed, step, self.anchors.size, batch_size)]
    rng = np.random.default_rng([self._seed, step, 1])
    anchor_group = self._group[anchors]
    related = self._unique[anchor_group] @ self._unique.T > 0  # [B, G]
    own = np.arange(len(self._count))[None, :] == anchor_group[:, None]
    positive_group, position = self._draw(rng, related * self._count - own)
    # Inside the anchor's own group, skip over the anchor itself.
    position += (positive_group == anchor_group) & (position >= self._rank[anchors])
    positives = self._members[self._start[positive_group] + position]
    negative_group, position = self._draw(rng, (~related) * self._count)
    negatives = self._members[self._start[negative_group] + position]
    return np.stack([anchors, positives, negatives], axis=1)
