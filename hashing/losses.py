"""Hashing losses: pure functions of real-valued codes (and labels), each returning a scalar.

`codes` are `[batch, bits]` network outputs, `labels` multi-hot `[batch, num_labels]`; two images
are similar when they share at least one label. `config.loss.name` picks a loss; which batches
it needs and how the model feeds it is `hashing/objectives.py`'s job.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from hashing.errors import UserError


def similarity(labels: jnp.ndarray) -> jnp.ndarray:
  """`[batch, L]` multi-hot -> `[batch, batch]` float, 1 where two images share a label."""
  labels = labels.astype(jnp.float32)
  return (labels @ labels.T > 0).astype(jnp.float32)


def squared_distances(codes: jnp.ndarray) -> jnp.ndarray:
  """`[batch, bits]` -> `[batch, batch]` squared Euclidean distances, clipped at 0.

  Written as |a|^2 + |b|^2 - 2 a.b (one matrix product); the clip removes the tiny negative
  values that rounding gives on the diagonal.
  """
  sq = jnp.sum(codes * codes, axis=1)
  return jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * codes @ codes.T, 0.0)


def dsh_loss(
  codes: jnp.ndarray, labels: jnp.ndarray, *, margin: float, alpha: float
) -> jnp.ndarray:
  """Deep Supervised Hashing loss (Liu et al., CVPR 2016, eq. 5) over all pairs of a batch.

  For a pair (i, j) with s_ij = 1 when the images share a label and D_ij = ||b_i - b_j||^2:

    L_ij = 1/2 s_ij D_ij + 1/2 (1 - s_ij) max(margin - D_ij, 0)
           + alpha (|| |b_i| - 1 ||_1 + || |b_j| - 1 ||_1)

  averaged over the B(B-1)/2 pairs i < j. Each image is in B-1 pairs, so the regularizer part
  of the average equals 2 * alpha * mean_i || |b_i| - 1 ||_1 exactly, which is how it is
  computed. The regularizer is | |b| - 1 |, not |1 - sign(b)| (which has zero gradient).

  Args:
    codes: `[batch, bits]` real-valued network outputs (no sigmoid).
    labels: `[batch, num_labels]` multi-hot labels.
    margin: m, the squared distance beyond which dissimilar pairs cost nothing (paper: 2 * bits).
    alpha: weight of the regularizer pulling each output towards +-1 (paper: 0.01).

  Returns:
    Scalar loss.
  """
  batch = codes.shape[0]
  s = similarity(labels)
  d = squared_distances(codes)
  pair_loss = 0.5 * s * d + 0.5 * (1.0 - s) * jnp.maximum(margin - d, 0.0)
  off_diagonal = 1.0 - jnp.eye(batch, dtype=codes.dtype)
  # The matrix is symmetric: the mean over i != j equals the mean over i < j.
  contrastive = jnp.sum(pair_loss * off_diagonal) / (batch * (batch - 1))
  # mean_i || |b_i| - 1 ||_1 = bits * (the mean over images and bits of | |b| - 1 |)
  regularizer = codes.shape[1] * quantization_loss(codes, levels=(-1.0, 1.0))
  return contrastive + 2.0 * alpha * regularizer


def triplet_loss(
  anchor: jnp.ndarray, positive: jnp.ndarray, negative: jnp.ndarray, *, margin: float
) -> jnp.ndarray:
  """Triplet ranking loss of DNNH (Lai et al., CVPR 2015, eq. 1), mean over the triplets:

    L = mean_t max(0, margin - (||a_t - n_t||^2 - ||a_t - p_t||^2))

  The positive p shares a label with the anchor a, the negative n shares none. On sigmoid
  outputs in [0, 1] (the paper; margin 1) or on +-1-scaled outputs (margin in those units:
  distances are 4x larger).

  Args:
    anchor, positive, negative: `[batch, bits]` codes.
    margin: how much farther than the positive the negative must be.

  Returns:
    Scalar loss.
  """
  to_positive = jnp.sum((anchor - positive) ** 2, axis=1)
  to_negative = jnp.sum((anchor - negative) ** 2, axis=1)
  return jnp.mean(jnp.maximum(margin - (to_negative - to_positive), 0.0))


MINING = ("all", "hard", "semihard")


def batch_triplet_loss(
  codes: jnp.ndarray, labels: jnp.ndarray, *, margin: float, mining: str = "all"
) -> jnp.ndarray:
  """The triplet ranking loss over the triplets found inside one batch (each image embedded once).

  With D the `[batch, batch]` squared distances, positives p != a sharing a label with anchor a,
  negatives n sharing none, and l(a, p, n) = max(0, margin + D[a, p] - D[a, n]):

    all:      mean of l over every valid (a, p, n) of the batch.
    hard:     per anchor with a positive and a negative, l(a, argmax_p D[a, p], argmin_n D[a, n])
              (batch-hard, Hermans et al. 2017); mean over those anchors.
    semihard: per valid (a, p), the closest negative farther than p (D[a, n] > D[a, p]), or the
              farthest negative when none is (FaceNet, Schroff et al. 2015); mean over (a, p).

  A batch without any valid triplet gives 0.

  Args:
    codes: `[batch, bits]`; labels: `[batch, num_labels]` multi-hot.
    margin: as in `triplet_loss`.
    mining: "all", "hard" or "semihard".

  Returns:
    Scalar loss.
  """
  if mining not in MINING:
    raise UserError(f"config.loss.mining={mining!r} is unknown; choose one of {list(MINING)}.")
  batch = codes.shape[0]
  d = squared_distances(codes)
  s = similarity(labels) > 0
  positive = s & ~jnp.eye(batch, dtype=bool)  # [a, p]
  negative = ~s  # [a, n]
  if mining == "all":
    valid = positive[:, :, None] & negative[:, None, :]  # [a, p, n]
    per_triplet = jnp.maximum(margin + d[:, :, None] - d[:, None, :], 0.0)
    return jnp.sum(jnp.where(valid, per_triplet, 0.0)) / jnp.maximum(jnp.sum(valid), 1)
  if mining == "hard":
    hardest_positive = jnp.max(jnp.where(positive, d, -jnp.inf), axis=1)
    hardest_negative = jnp.min(jnp.where(negative, d, jnp.inf), axis=1)
    valid = positive.any(axis=1) & negative.any(axis=1)
    per_anchor = jnp.maximum(margin + hardest_positive - hardest_negative, 0.0)
    return jnp.sum(jnp.where(valid, per_anchor, 0.0)) / jnp.maximum(jnp.sum(valid), 1)
  # semihard: for each (a, p), choose among the negatives of a.
  farther = negative[:, None, :] & (d[:, None, :] > d[:, :, None])  # [a, p, n]
  closest_farther = jnp.min(jnp.where(farther, d[:, None, :], jnp.inf), axis=2)
  farthest = jnp.max(jnp.where(negative, d, -jnp.inf), axis=1)[:, None]
  chosen = jnp.where(farther.any(axis=2), closest_farther, farthest)
  valid = positive & negative.any(axis=1)[:, None]
  per_pair = jnp.maximum(margin + d - chosen, 0.0)
  return jnp.sum(jnp.where(valid, per_pair, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def code_regression_loss(codes: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """Stage 2 of CNNH (Xia et al., AAAI 2014): fit the network to the stage-1 codes,

  L = mean_{i, k} (codes_ik - targets_ik)^2,   targets in {-1, 1}, `[batch, bits]` both.
  """
  return jnp.mean((codes - targets) ** 2)


def classification_loss(
  logits: jnp.ndarray, labels: jnp.ndarray, *, multi_label: bool, smoothing: float = 0.0
):
  """CNNH+'s class-label output: softmax cross-entropy against the class (single-label data)
  or the mean over labels of per-label sigmoid cross-entropy (multi-label data); mean over the
  batch. `logits` `[batch, L]`, `labels` multi-hot `[batch, L]`.

  `smoothing` = a > 0: label smoothing (Szegedy et al. 2016), the targets mixed with the
  uniform ones: y (1 - a) + a / L for softmax, y (1 - a) + a / 2 for each sigmoid.
  """
  labels = labels.astype(jnp.float32)
  if smoothing > 0:
    uniform = 0.5 if multi_label else 1.0 / labels.shape[-1]
    labels = labels * (1.0 - smoothing) + smoothing * uniform
  if multi_label:
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))
  return jnp.mean(optax.softmax_cross_entropy(logits, labels))


def bit_spread_loss(codes: jnp.ndarray, *, min_std: float) -> jnp.ndarray:
  """Hinge on each bit's spread over the batch (the variance term of VICReg, Bardes et al. 2022):

    L = mean_k max(0, min_std - sqrt(Var_b(codes_bk) + 1e-4)),   codes `[batch, bits]`.

  Zero for every bit whose output varies by at least `min_std` (a balanced sigmoid bit has
  std 0.5, a balanced +-1 bit 1). Why: a bit whose output is the same for every image gets no
  gradient from a pairwise or triplet loss (its distance terms cancel), so nothing but this term
  brings it back once weight decay has shrunk it; the hinge pushes its weights along the
  direction in which its features vary most. The 1e-4 keeps the square root's gradient finite.
  """
  std = jnp.sqrt(jnp.var(codes, axis=0) + 1e-4)
  return jnp.mean(jnp.maximum(min_std - std, 0.0))


def quantization_loss(codes: jnp.ndarray, *, levels: tuple[float, float]) -> jnp.ndarray:
  """Mean distance of each output to the nearer of the two binary values `levels`:

    L = mean_{b,k} min(|codes_bk - lo|, |codes_bk - hi|),   codes `[batch, bits]`.

  With levels (-1, 1) this is DSH's regularizer | |b| - 1 | per output; with (0, 1) on
  sigmoid outputs it is min(s, 1 - s). Why: retrieval binarises at the midpoint, so an output
  left near it ranks by a bit that could as well be flipped; this pulls outputs to the values
  the codes take.
  """
  lo, hi = levels
  return jnp.mean(jnp.minimum(jnp.abs(codes - lo), jnp.abs(codes - hi)))


# config.loss.name values: dsh (pairwise), triplet (explicit or in-batch triplets), cnnh
# (regression onto stage-1 codes, plus a class-label output for CNNH+).
LOSS_NAMES = ("dsh", "triplet", "cnnh")
# config.loss fields that must be >= 0 where a config has them.
NON_NEGATIVE = (
  "margin",
  "alpha",
  "class_weight",
  "spread_weight",
  "min_bit_std",
  "quantize_weight",
)


def check_loss_config(loss_config) -> None:
  """Rejects unknown loss names and negative margins or weights with one message each."""
  name = loss_config.name
  if name not in LOSS_NAMES:
    raise UserError(f"config.loss.name={name!r} is unknown; choose one of {list(LOSS_NAMES)}.")
  for field in NON_NEGATIVE:
    value = loss_config.get(field)
    if value is not None and value < 0:
      raise UserError(f"config.loss.{field}={value} must be >= 0.")
  smoothing = loss_config.get("label_smoothing", 0.0)
  if not 0 <= smoothing < 1:
    raise UserError(f"config.loss.label_smoothing={smoothing} must be in [0, 1).")
