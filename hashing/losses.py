"""Hashing losses: pure functions of real-valued codes and labels, chosen by name.

Every loss takes `codes` `[batch, bits]` and multi-hot `labels` `[batch, num_labels]` and returns
a scalar. Two images are similar when they share at least one label.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

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
  regularizer = jnp.mean(jnp.sum(jnp.abs(jnp.abs(codes) - 1.0), axis=1))
  return contrastive + 2.0 * alpha * regularizer


LOSSES: dict[str, Callable[..., jnp.ndarray]] = {"dsh": dsh_loss}


def loss_from_config(loss_config, bits: int) -> Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]:
  """Returns `loss(codes, labels) -> scalar` for `config.loss` (`name` plus its keywords).

  `margin=None` means the paper's default, 2 * bits.
  """
  name = loss_config.name
  if name not in LOSSES:
    raise UserError(f"config.loss.name={name!r} is unknown; choose one of {sorted(LOSSES)}.")
  kwargs = {k: v for k, v in loss_config.items() if k != "name"}
  if "margin" in kwargs and kwargs["margin"] is None:
    kwargs["margin"] = 2.0 * bits
  if kwargs.get("margin", 0) < 0:
    raise UserError(f"config.loss.margin={kwargs['margin']} must be >= 0 (None means 2 * bits).")
  if kwargs.get("alpha", 0) < 0:
    raise UserError(f"config.loss.alpha={kwargs['alpha']} must be >= 0.")
  loss_fn = LOSSES[name]
  return lambda codes, labels: loss_fn(codes, labels, **kwargs)
