"""Jitted train steps: one step on a host batch, a `lax.scan` chunk of steps gathering batches
from device-resident training arrays, each optionally vmapped over runs trained together.
"""

from __future__ import annotations

import jax
import ml_collections
import optax

from hashing import augment, compiling, objectives


def _step_function(
  objective: objectives.Objective,
  optimizer: optax.GradientTransformation,
  augment_config: ml_collections.ConfigDict,
):
  """The un-jitted train step of `make_train_step`."""

  def step(params, opt_state, batch, key, hyper):
    images = batch["images"]
    flat = images.reshape(-1, *images.shape[-3:])
    flat = augment.random_flip_and_crop(
      key, flat, flip=augment_config.flip, crop_padding=augment_config.crop_padding
    )
    # A key of its own folded from the step's key: runs without cutout keep their exact
    # flips and crops.
    cutout = augment_config.get("cutout", 0)
    flat = augment.random_cutout(jax.random.fold_in(key, 1), flat, size=cutout)
    jitter = augment_config.get("color_jitter", 0.0)
    flat = augment.random_color_jitter(jax.random.fold_in(key, 3), flat, strength=jitter)
    batch = {**batch, "images": flat.reshape(images.shape)}
    dropout_key = jax.random.fold_in(key, 2)  # its own key too, like cutout's
    loss, grads = jax.value_and_grad(objective.loss)(params, batch, hyper, dropout_key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    updates = jax.tree.map(lambda u: hyper["learning_rate"] * u, updates)
    return optax.apply_updates(params, updates), opt_state, loss, optax.tree.norm(grads)

  return step


def make_train_step(
  objective: objectives.Objective,
  optimizer: optax.GradientTransformation,
  augment_config: ml_collections.ConfigDict,
  members: int = 1,
):
  """Returns the jitted `step(params, opt_state, batch, key, hyper) -> (params, opt_state,
  loss, grad_norm)`.

  `batch` is an `objectives.Batches` dict, its uint8 `images` `[..., H, W, C]` (any leading
  axes: a batch or a triplet stack) augmented per image inside the step; `hyper` is
  `objectives.hyperparameters(config)` (the updates are scaled by its `learning_rate`, see
  `optim.make_optimizer`). `members` > 1 vmaps the step over a leading axis of every argument:
  that many runs with their own parameters, batches, keys and hyperparameters at once.
  """
  step = _step_function(objective, optimizer, augment_config)
  return compiling.jit(step if members == 1 else jax.vmap(step))


def make_train_chunk(
  objective: objectives.Objective,
  optimizer: optax.GradientTransformation,
  augment_config: ml_collections.ConfigDict,
  members: int = 1,
  data_axes=None,
):
  """Returns the jitted `chunk(params, opt_state, data, indices, keys, hyper) -> (params,
  opt_state, losses [T], grad_norms [T])`: T train steps in one `lax.scan`, each gathering its
  batch from the device-resident training arrays `data` (`Batches.arrays`) by its row indices
  (`indices` `[T, ...]` from `Batches.indices`, `keys` `[T]`), so that nothing crosses from the
  host during the chunk. `members` > 1 vmaps over runs; `data_axes` says which `data` arrays
  are per run (e.g. `{"images": None, "labels": None, "targets": 0}`).
  """
  step = _step_function(objective, optimizer, augment_config)

  def chunk(params, opt_state, data, indices, keys, hyper):
    def body(carry, xs):
      row_indices, key = xs
      params, opt_state, loss, grad_norm = step(
        *carry, objectives.gather(data, row_indices), key, hyper
      )
      return (params, opt_state), (loss, grad_norm)

    (params, opt_state), (losses, norms) = jax.lax.scan(body, (params, opt_state), (indices, keys))
    return params, opt_state, losses, norms

  if members > 1:
    chunk = jax.vmap(chunk, in_axes=(0, 0, data_axes, 0, 0, 0))
  return compiling.jit(chunk)


def scan_steps(config: ml_collections.ConfigDict) -> int:
  """Train steps per jitted call: `config.train.scan_steps`, or when 0 the backend's faster
  choice: 1 on CPU (a Python loop over a jitted step measured ~20x faster than `lax.scan`
  there), `train.log_every` on accelerators (the whole chunk stays on the device)."""
  steps = config.train.get("scan_steps", 0)
  if steps > 0:
    return steps
  return 1 if jax.default_backend() == "cpu" else max(1, config.train.log_every)
