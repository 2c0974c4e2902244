"""Optimizer and learning-rate schedule from `config.train` (optax)."""

from __future__ import annotations

import jax
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


def decay_mask(exclude: str):
  """The weight-decay mask for `train.weight_decay_exclude`, a comma-separated list of module
  names (e.g. "head" or "head,classes"): a function of the parameter pytree giving True for
  the leaves to decay, False for those under a listed module; None (decay all) for "".

  Why: DNNH at 48 bits with a class output: decay shrank the divide-and-encode weights of 6-10
  bits to norms of 0.06-0.16, those bits came out constant over the database, and excluding
  the head gained 0.004-0.012 mAP in three seeds (benchmarks/RESULTS.md).
  """
  names = {n.strip() for n in exclude.split(",") if n.strip()}
  if not names:
    return None

  def module_names(path) -> set:
    return {getattr(k, "key", None) for k in path}

  def mask(params):
    paths = [path for path, _ in jax.tree_util.tree_leaves_with_path(params)]
    if missing := names - set().union(*map(module_names, paths)):
      raise UserError(
        f"config.train.weight_decay_exclude names {sorted(missing)}, which the model does not "
        "have; use top-level module names such as 'head', 'classes' or 'backbone'."
      )
    return jax.tree_util.tree_map_with_path(lambda path, _: not module_names(path) & names, params)

  return mask


def make_optimizer(train_config, total_steps: int) -> optax.GradientTransformation:
  """Adam, AdamW (decoupled weight decay) or SGD with momentum (L2 weight decay, as Caffe),
  for a peak learning rate of 1: the train step multiplies the updates by the run's
  `learning_rate` (every update here is linear in it), so that runs with different rates can
  share one vmapped step."""
  schedule = learning_rate_schedule(train_config, total_steps, peak=1.0)
  name, wd = train_config.optimizer, train_config.weight_decay
  if train_config.learning_rate <= 0:
    raise UserError(f"config.train.learning_rate={train_config.learning_rate} must be positive.")
  mask = decay_mask(train_config.get("weight_decay_exclude", ""))
  if name == "adam":
    chain = [optax.add_decayed_weights(wd, mask=mask)] if wd else []
    return optax.chain(*chain, optax.adam(schedule))
  if name == "adamw":
    return optax.adamw(schedule, weight_decay=wd, mask=mask)
  if name == "sgd":
    chain = [optax.add_decayed_weights(wd, mask=mask)] if wd else []
    return optax.chain(*chain, optax.sgd(schedule, momentum=train_config.momentum))
  raise UserError(f"config.train.optimizer={name!r} is unknown; choose one of {OPTIMIZERS}.")
