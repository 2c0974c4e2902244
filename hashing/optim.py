"""Optimizer and learning-rate schedule from `config.train` (optax)."""

from __future__ import annotations

import optax

from hashing.errors import UserError

SCHEDULES = ("constant", "cosine", "step")
OPTIMIZERS = ("adam", "adamw", "sgd")


def learning_rate_schedule(
  train_config, total_steps: int, peak: float | None = None
) -> optax.Schedule:
  """Linear warm-up for `warmup_steps`, then constant, cosine decay to 0, or x0.1 steps, from
  the peak rate `peak` (default `train_config.learning_rate`).

  `step` divides the rate by 10 at each fraction of training listed in `decay_at`
  (e.g. (0.5, 0.75)), like the step policy of the Caffe solvers the papers used.
  """
  lr = train_config.learning_rate if peak is None else peak
  warmup = min(train_config.warmup_steps, total_steps)
  name = train_config.schedule
  if name == "constant":
    after = optax.constant_schedule(lr)
  elif name == "cosine":
    after = optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1))
  elif name == "step":
    boundaries = {int(f * total_steps) - warmup: 0.1 for f in train_config.decay_at}
    after = optax.piecewise_constant_schedule(lr, boundaries)
  else:
    raise UserError(f"config.train.schedule={name!r} is unknown; choose one of {SCHEDULES}.")
  if not warmup:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def make_optimizer(train_config, total_steps: int) -> optax.GradientTransformation:
  """Adam, AdamW (decoupled weight decay) or SGD with momentum (L2 weight decay, as Caffe),
  for a peak learning rate of 1: the train step multiplies the updates by the run's
  `learning_rate` (every update here is linear in it), so that runs with different rates can
  share one vmapped step."""
  schedule = learning_rate_schedule(train_config, total_steps, peak=1.0)
  name, wd = train_config.optimizer, train_config.weight_decay
  if train_config.learning_rate <= 0:
    raise UserError(f"config.train.learning_rate={train_config.learning_rate} must be positive.")
  if name == "adam":
    chain = [optax.add_decayed_weights(wd)] if wd else []
    return optax.chain(*chain, optax.adam(schedule))
  if name == "adamw":
    return optax.adamw(schedule, weight_decay=wd)
  if name == "sgd":
    chain = [optax.add_decayed_weights(wd)] if wd else []
    return optax.chain(*chain, optax.sgd(schedule, momentum=train_config.momentum))
  raise UserError(f"config.train.optimizer={name!r} is unknown; choose one of {OPTIMIZERS}.")
