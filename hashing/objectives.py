"""What one train step minimises, per method: the batches it needs and its loss of the parameters.

  dsh                       labeled batch, DSH pairwise loss over all pairs of the batch, plus
                            (class_weight > 0) a class-label output on the backbone features
  triplet, sampling=random  explicit triplets `[3, B, ...]`, shared weights (`apply_triplets`)
  triplet, sampling=all | hard | semihard
                            labeled batch embedded once, triplets mined inside it, plus
                            (class_weight > 0) a class-label output, (spread_weight > 0)
                            the bit-spread hinge, (quantize_weight > 0) the quantization loss
  cnnh                      labeled batch with stage-1 `targets`, regression onto them, plus
                            (CNNH+, class_weight > 0) a class-label output; `augment.mixup` > 0
                            first mixes the images in pairs, and their targets and labels alike

A batch is a dict of arrays: "labeled" batches hold `images` `[B, H, W, C]` and `labels`
`[B, L]`; "triplets" batches hold `images` `[3, B, H, W, C]` (anchor, positive, negative);
"targets" batches hold `images`, `labels` and `targets` `[B, bits]` in {-1, 1}.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hashing import augment, losses, models, sampling
from hashing.errors import UserError

SAMPLING = ("random", *losses.MINING)


@dataclasses.dataclass(frozen=True)
class Objective:
  """`loss(params, batch, hyper, dropout_key) -> scalar` and the kind of batch it takes
  ("labeled", "triplets" or "targets"). `hyper` is `hyperparameters(config)`: passed as arrays,
  not baked in, so that runs differing only in them share one compiled (and vmapped) step.
  `dropout_key` draws the model's dropout masks (unused when `config.model.dropout` is 0)."""

  batch_kind: str
  loss: Callable[..., jnp.ndarray]


def num_class_outputs(config: ml_collections.ConfigDict, num_labels: int) -> int:
  """Size of the model's class-label output: `num_labels` when the loss weighs one (CNNH+, DSH
  or in-batch DNNH with `class_weight` > 0), else 0 (none)."""
  return num_labels if config.loss.get("class_weight", 0) > 0 else 0


def hyperparameters(config: ml_collections.ConfigDict) -> dict[str, float]:
  """The numbers a train step takes as inputs: `learning_rate` (peak), and the loss's `margin`
  (DSH's None resolved to 2 * bits) and `alpha` where the loss has them."""
  loss = config.loss
  hyper = {"learning_rate": float(config.train.learning_rate)}
  if "margin" in loss:
    margin = loss.margin
    hyper["margin"] = float(2.0 * config.model.bits if margin is None else margin)
  if "alpha" in loss:
    hyper["alpha"] = float(loss.alpha)
  return hyper


def make_objective(
  config: ml_collections.ConfigDict, model: models.HashNet, multi_label: bool = False
) -> Objective:
  """The objective of `config.loss` for `model` (checks the loss fields first).

  `multi_label`: whether the training labels are multi-label (CNNH+'s class loss depends on it).
  """
  cfg = config.loss
  losses.check_loss_config(cfg)

  def codes_of(params, images, key, with_logits=False):
    return model.apply(params, images, train=True, rngs={"dropout": key}, with_logits=with_logits)

  mixup_alpha = config.augment.get("mixup", 0.0)
  if mixup_alpha > 0 and cfg.name != "cnnh":
    raise UserError(
      f"config.augment.mixup={mixup_alpha} needs config.loss.name='cnnh' (mixed regression "
      f"targets and labels); the {cfg.name!r} loss compares labels, which a mixed image lacks. "
      "Set config.augment.mixup=0."
    )

  spread_weight = cfg.get("spread_weight", 0.0)
  quantize_weight = cfg.get("quantize_weight", 0.0)
  label_smoothing = cfg.get("label_smoothing", 0.0)

  def codes_and_extra_terms(params, batch, key):
    """Codes of a labeled batch and the terms added to its method's loss: the weighted class
    loss (with a class output), the weighted bit-spread hinge (`spread_weight` > 0) and the
    weighted quantization loss (`quantize_weight` > 0)."""
    if model.num_classes:
      codes, logits = codes_of(params, batch["images"], key, with_logits=True)
      extra = cfg.class_weight * losses.classification_loss(
        logits,
        batch["labels"],
        multi_label=multi_label,
        smoothing=label_smoothing,
      )
    else:
      codes, extra = codes_of(params, batch["images"], key), 0.0
    if spread_weight > 0:
      extra += spread_weight * losses.bit_spread_loss(codes, min_std=cfg.min_bit_std)
    if quantize_weight > 0:
      levels = models.BINARY_LEVELS[model.output]
      extra += quantize_weight * losses.quantization_loss(codes, levels=levels)
    return codes, extra

  if cfg.name == "dsh":

    def pairwise(params, batch, hyper, key):
      codes, extra = codes_and_extra_terms(params, batch, key)
      return extra + losses.dsh_loss(
        codes, batch["labels"], margin=hyper["margin"], alpha=hyper["alpha"]
      )

    return Objective("labeled", pairwise)

  if cfg.name == "cnnh":

    def regression(params, batch, hyper, key):
      if mixup_alpha > 0:
        # Its own key folded from the dropout key, so that the dropout masks stay the same.
        images, labels, targets = augment.mixup(
          jax.random.fold_in(key, 1),
          mixup_alpha,
          batch["images"],
          batch["labels"],
          batch["targets"],
        )
        batch = {"images": images, "labels": labels, "targets": targets}
      codes, extra = codes_and_extra_terms(params, batch, key)
      return extra + losses.code_regression_loss(codes, batch["targets"])

    return Objective("targets", regression)

  # triplet
  if cfg.sampling not in SAMPLING:
    raise UserError(
      f"config.loss.sampling={cfg.sampling!r} is unknown; choose one of {list(SAMPLING)}."
    )
  if cfg.sampling == "random":
    for field in ("class_weight", "spread_weight", "quantize_weight"):
      if cfg.get(field, 0) > 0:
        raise UserError(
          f"config.loss.{field} > 0 needs in-batch triplets (sampling=all|hard|semihard); "
          "explicit triplets (sampling=random) embed no labeled batch."
        )
    mode = config.train.triplet_apply
    if mode not in models.TRIPLET_APPLY:
      raise UserError(
        f"config.train.triplet_apply={mode!r} is unknown; choose one of "
        f"{list(models.TRIPLET_APPLY)}."
      )

    def explicit(params, batch, hyper, key):
      codes = models.apply_triplets(
        model, params, batch["images"], mode=mode, train=True, dropout_key=key
      )
      return losses.triplet_loss(codes[0], codes[1], codes[2], margin=hyper["margin"])

    return Objective("triplets", explicit)

  def in_batch(params, batch, hyper, key):
    codes, extra = codes_and_extra_terms(params, batch, key)
    return extra + losses.batch_triplet_loss(
      codes, batch["labels"], margin=hyper["margin"], mining=cfg.sampling
    )

  return Objective("labeled", in_batch)


def gather(arrays: dict, indices):
  """The batch of training-set rows `indices` from `arrays` (numpy on the host, or device arrays
  inside a jitted step): indices `[B]` take those rows of every array; triplet indices
  `[3, B]` give `images` `[3, B, H, W, C]` only."""
  if indices.ndim == 2:
    return {"images": arrays["images"][indices]}
  return {name: array[indices] for name, array in arrays.items()}


class Batches:
  """The training batches of an objective: `batches(step)` -> dict of numpy arrays, which is
  `gather(batches.arrays, batches.indices(step))`.

  Args:
    batch_kind: `Objective.batch_kind`.
    images: uint8 `[N, H, W, C]`; labels: multi-hot `[N, L]` (the training split).
    batch_size: images per batch (labeled) or triplets per batch (triplets), at most one epoch.
    seed: the run's seed; batches depend on (seed, step) only.
    targets: `[N, bits]` stage-1 codes ("targets" batches only).
    repeats: > 1 fills a batch with `batch_size / repeats` distinct images, each `repeats`
      times (repeated augmentation: the step augments every copy on its own, and a pairwise
      loss sees the copies as similar pairs); an epoch then takes `repeats` times the steps.
  """

  def __init__(
    self,
    batch_kind: str,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int,
    targets: np.ndarray | None = None,
    repeats: int = 1,
  ):
    if (batch_kind == "targets") != (targets is not None):
      raise ValueError("targets are given exactly for the 'targets' batch kind")
    if repeats < 1 or batch_size % repeats or (repeats > 1 and batch_kind == "triplets"):
      raise UserError(
        f"config.augment.repeats={repeats} must be 1, or divide the batch size "
        f"({batch_size}) of a method that trains on batches of images (not explicit triplets)."
      )
    self.repeats = repeats
    self.arrays = {"images": images, "labels": labels}
    if targets is not None:
      self.arrays["targets"] = targets
    self._seed = seed
    self._triplets = sampling.TripletSampler(labels, seed) if batch_kind == "triplets" else None
    # One epoch = one pass over the images (over the usable anchors, for triplets).
    epoch_size = images.shape[0] if self._triplets is None else self._triplets.anchors.size
    self._distinct = min(batch_size // repeats, epoch_size)  # distinct images per batch
    self.batch_size = self._distinct * repeats
    self.steps_per_epoch = epoch_size // self._distinct
    # Images the network sees per step (for images/s).
    self.images_per_step = self.batch_size * (3 if self._triplets is not None else 1)

  def indices(self, step: int) -> np.ndarray:
    """Training-set rows of `step`: `[B]`, or `[3, B]` (anchor, positive, negative) triplets."""
    if self._triplets is not None:
      return self._triplets(step, self.batch_size).T
    num_images = self.arrays["images"].shape[0]
    distinct = sampling.batch_indices(self._seed, step, num_images, self._distinct)
    return np.tile(distinct, self.repeats)

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    return gather(self.arrays, self.indices(step))
