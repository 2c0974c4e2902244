"""Training and evaluation of one hashing run: `train_and_evaluate(config, workdir)`.

data -> protocol split -> model -> jit train step (optax) -> encode query and database ->
metrics -> workdir files (config.json, split.npz, metrics.jsonl, codes.npz, params.msgpack,
results.json, table.md, pr_curve.png, precision_at_k.png).
"""

from __future__ import annotations

import copy
import datetime
import math
import os
import time
from collections.abc import Callable

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

import hashing
from hashing import augment, data, losses, metrics, models, optim, protocols, report
from hashing import io as hio
from hashing.errors import UserError


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Rejects impossible values with one message each (the model and loss check their own)."""
  train = config.train
  if train.batch_size < 2:
    raise UserError(f"config.train.batch_size={train.batch_size}: pairwise losses need >= 2.")
  if train.steps <= 0 and train.epochs <= 0:
    raise UserError("set config.train.epochs or config.train.steps to a positive number.")
  if config.augment.crop_padding < 0:
    raise UserError(f"config.augment.crop_padding={config.augment.crop_padding} must be >= 0.")


def prepare_data(config: ml_collections.ConfigDict) -> tuple[data.LabeledImages, protocols.Split]:
  """Loads the source, pools its splits and draws the protocol split."""
  cfg = config.data
  splits = data.load_source(cfg.source, image_size=cfg.image_size or None)
  pooled = data.pool(splits)
  split = protocols.make_split(
    cfg.protocol,
    pooled.labels,
    data.pool_offsets(splits),
    seed=config.seed,
    query_per_class=cfg.query_per_class,
    train_per_class=cfg.train_per_class,
    train_from_database=cfg.train_from_database,
    database=cfg.database,
    database_limit=cfg.database_limit,
  )
  return pooled, split


def pixel_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and standard deviation `[C]` of uint8 images `[N, H, W, C]`."""
  axes = (0, 1, 2)
  mean = images.mean(axis=axes, dtype=np.float64)
  std = np.sqrt(np.maximum((images.astype(np.float32) ** 2).mean(axis=axes) - mean**2, 1e-6))
  return mean, std


def make_train_step(
  model: models.HashNet,
  loss_fn: Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray],
  optimizer: optax.GradientTransformation,
  augment_config: ml_collections.ConfigDict,
):
  """Returns the jitted `step(params, opt_state, images, labels, key) -> (params, opt_state,
  loss, grad_norm)`; images are uint8 `[batch, H, W, C]`, labels multi-hot `[batch, L]`."""

  @jax.jit
  def step(params, opt_state, images, labels, key):
    images = augment.random_flip_and_crop(
      key, images, flip=augment_config.flip, crop_padding=augment_config.crop_padding
    )

    def objective(p):
      return loss_fn(model.apply(p, images), labels)

    loss, grads = jax.value_and_grad(objective)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, optax.tree.norm(grads)

  return step


def encode(model: models.HashNet, params, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
  """Real-valued codes `[N, bits]` of uint8 images `[N, H, W, C]`, in fixed-size chunks.

  The last chunk is padded to `batch_size` so the jitted apply compiles once.
  """
  apply = jax.jit(model.apply)
  out = []
  for start in range(0, images.shape[0], batch_size):
    chunk = images[start : start + batch_size]
    pad = batch_size - chunk.shape[0]
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
    out.append(np.asarray(apply(params, chunk))[: batch_size - pad])
  return np.concatenate(out)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Trains and evaluates each bit length of `config.bit_lengths` (or `config.model.bits`).

  Several bit lengths go to sub-workdirs `bits-<q>`, with a combined `table.md` in `workdir`.
  Returns the list of `results.json` dictionaries.
  """
  make_workdir(workdir)
  if not config.bit_lengths:
    return [train_one(config, workdir)]
  results = []
  for bits in config.bit_lengths:
    run_config = copy.deepcopy(config)
    run_config.model.bits = int(bits)
    run_config.bit_lengths = ()
    results.append(train_one(run_config, os.path.join(workdir, f"bits-{bits}")))
  report.write_table(workdir, results)
  report.write_plots(workdir, results)
  return results


def make_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UserError(
      f"cannot create workdir {workdir!r} ({e.strerror}); pass a writable --workdir."
    ) from None
  if not os.access(workdir, os.W_OK):
    raise UserError(f"workdir {workdir!r} is not writable; pass a writable --workdir.")


def train_one(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """One run: train `config.model.bits`-bit codes, evaluate the final model, write the workdir."""
  validate_config(config)
  make_workdir(workdir)
  hio.write_json(os.path.join(workdir, "config.json"), config.to_dict())

  pooled, split = prepare_data(config)
  hio.write_npz(os.path.join(workdir, "split.npz"), **split.arrays())
  train_images, train_labels = pooled.images[split.train], pooled.labels[split.train]

  bits = config.model.bits
  mean, std = pixel_statistics(train_images)
  model = models.build_model(config.model, mean, std)
  loss_fn = losses.loss_from_config(config.loss, bits)

  batch_size = min(config.train.batch_size, train_images.shape[0])
  steps_per_epoch = train_images.shape[0] // batch_size
  total_steps = (
    config.train.steps if config.train.steps > 0 else config.train.epochs * steps_per_epoch
  )
  optimizer = optim.make_optimizer(config.train, total_steps)
  schedule = optim.learning_rate_schedule(config.train, total_steps)

  init_key, augment_key = jax.random.split(jax.random.key(config.seed))
  params = model.init(init_key, jnp.asarray(train_images[:1]))
  opt_state = optimizer.init(params)
  step_fn = make_train_step(model, loss_fn, optimizer, config.augment)

  # Batches come from a seeded permutation per epoch (sampling without replacement).
  batch_rng = np.random.default_rng(config.seed)
  order = np.empty(0, dtype=np.int64)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  hio.write_text(metrics_path, "")
  log_every = max(1, min(config.train.log_every, total_steps))
  window_losses, window_start = [], time.perf_counter()
  start = time.perf_counter()
  bar = tqdm.tqdm(
    total=total_steps, desc=f"{config.method} {bits} bits", disable=None, mininterval=1
  )
  for step in range(total_steps):
    if order.size < batch_size:
      order = batch_rng.permutation(train_images.shape[0])
    batch, order = order[:batch_size], order[batch_size:]
    params, opt_state, loss, grad_norm = step_fn(
      params,
      opt_state,
      train_images[batch],
      train_labels[batch],
      jax.random.fold_in(augment_key, step),
    )
    window_losses.append(loss)
    if (step + 1) % log_every == 0 or step + 1 == total_steps:
      mean_loss = float(np.mean(jax.device_get(window_losses)))
      now = time.perf_counter()
      record = {
        "step": step + 1,
        "epoch": (step + 1) / steps_per_epoch,
        "loss": mean_loss,
        "grad_norm": float(grad_norm),
        "learning_rate": float(schedule(step)),
        "images_per_sec": len(window_losses) * batch_size / (now - window_start),
        "seconds": now - start,
      }
      if not (math.isfinite(mean_loss) and math.isfinite(record["grad_norm"])):
        raise UserError(
          f"the loss or gradient became {mean_loss}/{record['grad_norm']} at step {step + 1}; "
          "lower config.train.learning_rate or check the data."
        )
      hio.append_jsonl(metrics_path, record)
      bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{record['images_per_sec']:.0f}")
      bar.update(len(window_losses))
      window_losses, window_start = [], now
  bar.close()
  train_seconds = time.perf_counter() - start
  hio.write_bytes(os.path.join(workdir, "params.msgpack"), flax.serialization.to_bytes(params))

  eval_start = time.perf_counter()
  # Encode each needed image once (query and database may overlap: database="query").
  needed = np.union1d(split.query, split.database)
  codes = encode(model, params, pooled.images[needed], config.eval.batch_size)
  query_codes = metrics.pack_codes(codes[np.searchsorted(needed, split.query)])
  database_codes = metrics.pack_codes(codes[np.searchsorted(needed, split.database)])
  query_labels = pooled.labels[split.query].astype(np.uint8)
  database_labels = pooled.labels[split.database].astype(np.uint8)
  evaluation = metrics.evaluate(
    query_codes,
    database_codes,
    query_labels,
    database_labels,
    num_bits=bits,
    map_at=tuple(config.eval.map_at),
    precision_at=tuple(config.eval.precision_at),
  )
  hio.write_npz(
    os.path.join(workdir, "codes.npz"),
    query_codes=query_codes,
    database_codes=database_codes,
    query_labels=query_labels,
    database_labels=database_labels,
  )
  results = {
    "method": config.method,
    "protocol": config.data.protocol,
    "source": config.data.source,
    "bits": bits,
    "seed": config.seed,
    "steps": total_steps,
    "epochs": total_steps / steps_per_epoch,
    "final_loss": mean_loss,
    "train_seconds": train_seconds,
    "eval_seconds": time.perf_counter() - eval_start,
    "num_train": int(split.train.size),
    "pixel_mean": mean.tolist(),
    "pixel_std": std.tolist(),
    "evaluated": "final model",
    "backend": jax.default_backend(),
    "hashing_version": hashing.__version__,
    "jax_version": jax.__version__,
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    **evaluation,
  }
  hio.write_json(os.path.join(workdir, "results.json"), results)
  report.write_table(workdir, [results])
  report.write_plots(workdir, [results])
  return results
