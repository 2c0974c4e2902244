"""Training and evaluation of one hashing run: `train_and_evaluate(config, workdir)`.

data -> protocol split -> model -> jit train step (optax) -> encode query and database ->
metrics -> workdir files (config.json, split.npz, metrics.jsonl, checkpoints/, params.msgpack,
codes.npz, results.json, table.md, pr_curve.png, precision_at_k.png).
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import sys
import time
from collections.abc import Callable

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

import hashing
from hashing import (
  checkpoint,
  data,
  losses,
  metrics,
  models,
  objectives,
  optim,
  parallel,
  protocols,
  report,
  search,
  steps,
  two_stage,
)
from hashing import io as hio
from hashing.errors import UserError

try:
  import fcntl
except ImportError:  # Windows: no flock; workdirs go unlocked there.
  fcntl = None


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Rejects impossible values with one message each (the model and loss check their own)."""
  train = config.train
  if train.batch_size < 2:
    raise UserError(f"config.train.batch_size={train.batch_size}: pairwise losses need >= 2.")
  if train.steps <= 0 and train.epochs <= 0:
    raise UserError("set config.train.epochs or config.train.steps to a positive number.")
  losses.check_loss_config(config.loss)
  for field in ("crop_padding", "cutout", "mixup"):
    if config.augment.get(field, 0) < 0:
      raise UserError(f"config.augment.{field}={config.augment[field]} must be >= 0 (0: off).")
  if not 0 <= config.augment.get("color_jitter", 0.0) < 1:
    raise UserError(
      f"config.augment.color_jitter={config.augment.color_jitter} must be in [0, 1) (0: off)."
    )


def prepare_data(config: ml_collections.ConfigDict) -> tuple[data.LabeledImages, protocols.Split]:
  """Loads the source, pools its splits and draws the protocol split."""
  cfg = config.data
  splits = data.load_source(cfg.source, image_size=cfg.image_size or None)
  pooled = data.pool(splits)
  split = protocols.make_split(
    cfg.protocol,
    pooled.labels,
    data.pool_offsets(splits),
    seed=split_seed(config),
    query_per_class=cfg.query_per_class,
    train_per_class=cfg.train_per_class,
    train_from_database=cfg.train_from_database,
    database=cfg.database,
    database_limit=cfg.database_limit,
  )
  return pooled, split


def split_seed(config: ml_collections.ConfigDict) -> int:
  """The seed of the protocol split: `config.data.split_seed`, or `config.seed` when unset."""
  seed = config.data.get("split_seed")
  return config.seed if seed is None else seed


def pixel_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and standard deviation `[C]` of uint8 images `[N, H, W, C]`."""
  axes = (0, 1, 2)
  mean = images.mean(axis=axes, dtype=np.float64)
  std = np.sqrt(np.maximum((images.astype(np.float32) ** 2).mean(axis=axes) - mean**2, 1e-6))
  return mean, std


def _records_up_to(metrics_path: str, step: int) -> list[str]:
  """Lines of `metrics.jsonl` with step <= `step` (a resumed run rewrites what came after)."""
  if not step:
    return []
  records = hio.read_jsonl(metrics_path)
  return [hio.jsonl_line(r) for r in records if r.get("step", step + 1) <= step]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """Trains and evaluates each bit length of `config.bit_lengths` (or `config.model.bits`).

  Several bit lengths go to sub-workdirs `bits-<q>`, with a combined `table.md` in `workdir`.
  Runs resume from their last checkpoint; finished runs are not trained again. A shallow
  baseline (`config.method` "lsh" or "itq") is fitted by `baselines.fit_and_evaluate` instead.
  Returns the list of `results.json` dictionaries.
  """
  return train_and_evaluate_together([config], [workdir])[0]


def train_and_evaluate_together(
  configs: list[ml_collections.ConfigDict], workdirs: list[str]
) -> list[list[dict]]:
  """`train_and_evaluate` of several runs at once: per bit length, the runs train together in
  one vmapped step (`train_together`; they may differ only in `STACKABLE_FIELDS`). Returns
  each run's list of results."""
  run_one = _runner(configs[0].method)
  for config, workdir in zip(configs, workdirs, strict=True):
    claim_workdir(config, workdir)
  check_stackable(configs)
  if run_one is not train_one and len(configs) > 1:
    raise UserError(f"{configs[0].method} is fitted, not trained: it cannot be vmapped.")
  lengths = configs[0].bit_lengths
  results = [[] for _ in configs]
  for bits in lengths or [None]:
    runs, dirs = configs, workdirs
    if bits is not None:
      runs = [copy.deepcopy(c) for c in configs]
      for run in runs:
        run.model.bits, run.bit_lengths = int(bits), ()
      dirs = [os.path.join(w, f"bits-{bits}") for w in workdirs]
    done = train_together(runs, dirs) if run_one is train_one else [run_one(runs[0], dirs[0])]
    for k, r in enumerate(done):
      results[k].append(r)
  if lengths:
    for workdir, run_results in zip(workdirs, results, strict=True):
      report.write_table(workdir, run_results)
      report.write_plots(workdir, run_results)
  return results


def _runner(method: str):
  """The function that makes one run of `method`: `train_one`, or the baselines' fitter."""
  # Imported here, not at the top: hashing.baselines builds on this module (data, workdir,
  # evaluation), so a module-level import would be circular.
  from hashing import baselines

  return baselines.fit_and_evaluate if method in baselines.METHODS else train_one


def finished_results(workdir: str) -> dict | None:
  """The `results.json` of a finished run in `workdir`, or None when it has not finished."""
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def write_results(workdir: str, results: dict) -> dict:
  """Writes `results.json` (its presence marks the run finished), `table.md` and the plots of
  one run; returns `results`."""
  hio.write_json(os.path.join(workdir, "results.json"), results)
  report.write_table(workdir, [results])
  report.write_plots(workdir, [results])
  return results


def run_info() -> dict:
  """What produced a run, for `results.json`: backend, package versions, UTC date."""
  return {
    "backend": jax.default_backend(),
    "hashing_version": hashing.__version__,
    "jax_version": jax.__version__,
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }


def _flatten(tree: dict, prefix: str = "") -> dict:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[prefix + key] = value
  return flat


def claim_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Creates `workdir` and writes `config.json`, or checks that it holds a run of this config.

  A workdir is never shared by two configs, nor by two live processes (`_lock_workdir`):
  results, checkpoints and codes would mix.
  """
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UserError(
      f"cannot create workdir {workdir!r} ({e.strerror}); pass a writable --workdir."
    ) from None
  _lock_workdir(workdir)
  path = os.path.join(workdir, "config.json")
  current = json.loads(json.dumps(config.to_dict()))  # tuples -> lists, as saved
  if os.path.exists(path):
    with open(path) as f:
      saved = _flatten(json.load(f))
    now = _flatten(current)
    # Fields a newer version added (absent from the saved config) do not count: a run started
    # by an older version stays resumable and readable.
    changed = sorted(k for k in saved if saved[k] != now.get(k))
    if changed:
      key = changed[0]
      raise UserError(
        f"workdir {workdir!r} holds a run of a different config ({key}: {saved.get(key)!r} "
        f"there, {now.get(key)!r} now); use another --workdir, or delete it to start over."
      )
    return
  try:
    hio.write_json(path, current)
  except OSError as e:
    raise UserError(
      f"cannot write to workdir {workdir!r} ({e.strerror}); pass a writable --workdir."
    ) from None


# Open lock files of the workdirs this process has claimed, by real path. They stay open (and
# locked) until the process exits; the kernel then drops the lock, so none is ever left stale.
_WORKDIR_LOCKS: dict[str, object] = {}


def _lock_workdir(workdir: str) -> None:
  """Takes an exclusive `flock` on `workdir/.lock`, or stops when another live process holds it.

  Two trainings started into one workdir would both resume from its checkpoints and interleave
  their metrics and results. Only process 0 of a multi-host run locks (the others write nothing).
  """
  path = os.path.realpath(workdir)
  if fcntl is None or path in _WORKDIR_LOCKS or not parallel.is_main_process():
    return
  try:
    lock = open(os.path.join(path, ".lock"), "a+")  # held open (locked) until the process exits
  except OSError:
    return  # a read-only workdir: nothing can train into it, and its finished runs stay readable
  try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    lock.seek(0)
    holder = lock.read().strip() or "unknown"
    lock.close()
    raise UserError(
      f"workdir {workdir!r} is in use by another running process (pid {holder}); wait for it "
      "to finish or stop it, or pass another --workdir."
    ) from None
  lock.truncate(0)
  lock.write(f"{os.getpid()}\n")
  lock.flush()
  _WORKDIR_LOCKS[path] = lock


def _check_finite(
  losses_and_norms: np.ndarray, first_step: int, checkpointer: checkpoint.Checkpointer
) -> None:
  """Raises if a loss or gradient norm (`[steps, 2]`, the steps after `first_step`) of one run
  is NaN or infinite."""
  bad = np.flatnonzero(~np.isfinite(losses_and_norms).all(axis=1))
  if bad.size:
    step = first_step + int(bad[0]) + 1
    loss, norm = losses_and_norms[bad[0]]
    last = checkpointer.latest_step()
    kept = f"keeping the last good checkpoint (step {last})" if last else "no checkpoint saved yet"
    raise UserError(
      f"the loss or gradient became {loss}/{norm} at step {step}; stopped, {kept}. Lower "
      "config.train.learning_rate or check the data."
    )


# Every gradient norm of a window (the steps between two logs, saves or evaluations) below
# this: training has stalled. Healthy runs of these networks log norms of 0.01-30; a collapsed
# triplet run (every image on the same saturated outputs, the loss at the margin) falls below
# 1e-5 within a few hundred steps and stays there.
STALLED_GRADIENT_NORM = 1e-5


def stalled(losses_and_norms: np.ndarray) -> bool:
  """Whether every gradient norm of one run's window (`[steps, 2]`: loss, norm) is below
  `STALLED_GRADIENT_NORM`."""
  return bool((losses_and_norms[:, 1] < STALLED_GRADIENT_NORM).all())


def stall_warning(workdir: str, step: int, loss: float) -> str:
  """The message printed once when a run's gradient vanishes (`stalled`)."""
  return (
    f"warning: {workdir}: the gradient norm stayed below {STALLED_GRADIENT_NORM:g} up to step "
    f"{step} (loss {loss:.4g}): training has stalled. With a triplet loss this is usually a "
    "collapse (every image gets the same outputs, the loss sits at the margin); lower "
    "config.train.learning_rate, use sampling=semihard or add config.loss.class_weight=1."
  )


def encode_split(
  encode: Callable[[np.ndarray], np.ndarray], images: np.ndarray, split: protocols.Split
) -> tuple[np.ndarray, np.ndarray]:
  """Real-valued codes of the query and database images: `encode` maps uint8 images
  `[n, H, W, C]` to codes `[n, q]`; returns (query codes `[Q, q]`, database codes `[N, q]`)."""
  # Encode each needed image once (query and database may overlap: database="query").
  needed = np.union1d(split.query, split.database)
  codes = encode(images[needed])
  return codes[np.searchsorted(needed, split.query)], codes[np.searchsorted(needed, split.database)]


def evaluate_codes(
  config: ml_collections.ConfigDict,
  query_codes: np.ndarray,
  database_codes: np.ndarray,
  labels: np.ndarray,
  split: protocols.Split,
  workdir: str | None,
) -> dict:
  """Evaluates real-valued codes, query `[Q, q]` and database `[N, q]` (a bit is code > 0),
  against the pooled multi-hot `labels` `[pooled, L]`; writes `codes.npz` (packed codes and
  labels) unless `workdir` is None, and returns `metrics.evaluate`'s dict."""
  packed = {
    "query_codes": metrics.pack_codes(query_codes),
    "database_codes": metrics.pack_codes(database_codes),
    "query_labels": labels[split.query].astype(np.uint8),
    "database_labels": labels[split.database].astype(np.uint8),
    # The real values before binarisation (minus the threshold), for the reports' histograms.
    "query_values": np.asarray(query_codes, np.float32),
  }
  if workdir is not None:
    hio.write_npz(os.path.join(workdir, "codes.npz"), **packed)
  return metrics.evaluate(
    packed["query_codes"],
    packed["database_codes"],
    packed["query_labels"],
    packed["database_labels"],
    num_bits=config.model.bits,
    map_at=tuple(config.eval.map_at),
    precision_at=tuple(config.eval.precision_at),
  )


def evaluate_model(
  config: ml_collections.ConfigDict,
  model: models.HashNet,
  params,
  pooled: data.LabeledImages,
  split: protocols.Split,
  workdir: str | None,
) -> dict:
  """Encodes query and database, writes `codes.npz` (unless `workdir` is None), returns
  `metrics.evaluate`'s dict."""
  query_codes, database_codes = encode_split(
    lambda images: models.encode(model, params, images, config.eval.batch_size),
    pooled.images,
    split,
  )
  return evaluate_codes(config, query_codes, database_codes, pooled.labels, split, workdir)


def reevaluate(workdir: str, *, flip_average: bool | None = None) -> dict:
  """Evaluates a finished run's `params.msgpack` again with the current code.

  Rebuilds the data split from the run's `config.json` and the model from its `results.json`
  (input statistics); writes `reevaluation.json` (the original `results.json` stays) and
  rewrites `codes.npz`. For runs evaluated by an older version of the protocol or metrics.

  flip_average: encode with (True) or without (False) the flip-averaged codes of
    `config.model.flip_average` instead of the run's own choice; `reevaluation.json` then says
    which, and `codes.npz` keeps the run's own codes.
  """
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  own = bool(config.model.get("flip_average", False))
  chosen = own if flip_average is None else bool(flip_average)
  pooled, split = prepare_data(config)
  trained = search.TrainedModel.load(workdir, image_shape=pooled.images.shape[1:])
  model = trained.model.clone(flip_average=chosen)
  evaluation = evaluate_model(
    config, model, trained.params, pooled, split, workdir if chosen == own else None
  )
  evaluation["flip_average"] = chosen
  hio.write_json(os.path.join(workdir, "reevaluation.json"), evaluation)
  return evaluation


def stage1_targets(
  config: ml_collections.ConfigDict, labels: np.ndarray, workdir: str
) -> tuple[np.ndarray, dict]:
  """CNNH stage 1: codes `[n, bits]` in {-1, 1} of the training images, from their labels.

  Computed once and saved in `workdir/stage1.npz` (codes, objective per sweep, seconds); a
  resumed run reuses them, so stage 2 keeps fitting the same targets. Also returns what
  results.json reports: stage-1 seconds and final objective / (bits * n)^2.
  """
  path = os.path.join(workdir, "stage1.npz")
  if os.path.exists(path):
    with np.load(path) as saved:
      codes, history, seconds = saved["codes"], saved["objective"], float(saved["seconds"])
  else:
    start = time.perf_counter()
    codes, history = two_stage.stage1_codes(
      labels, config.model.bits, sweeps=config.stage1.sweeps, seed=config.seed
    )
    seconds = time.perf_counter() - start
    hio.write_npz(path, codes=codes, objective=history, seconds=seconds)
  scale = float(config.model.bits * len(labels)) ** 2  # f at H = 0
  return codes, {"stage1_seconds": seconds, "stage1_objective": float(history[-1]) / scale}


# Config fields that may differ between runs trained together by one vmapped step.
STACKABLE_FIELDS = ("seed", "loss.alpha", "loss.margin", "train.learning_rate")


def check_stackable(configs: list[ml_collections.ConfigDict]) -> None:
  """Raises UserError unless the configs differ only in `STACKABLE_FIELDS` and share one data
  split (so one model definition, with one set of input statistics, fits them all)."""
  first = _flatten(configs[0].to_dict())
  for config in configs[1:]:
    flat = _flatten(config.to_dict())
    other = sorted(
      k for k in first.keys() | flat.keys() if first.get(k) != flat.get(k)
      and k not in STACKABLE_FIELDS
    )  # fmt: skip
    if other:
      raise UserError(
        f"runs trained together (vmap) may differ only in {', '.join(STACKABLE_FIELDS)}; "
        f"these differ in {other[0]} ({first.get(other[0])!r} vs {flat.get(other[0])!r})."
      )
    if split_seed(config) != split_seed(configs[0]):
      raise UserError(
        "runs trained together (vmap) need one data split; set --config.data.split_seed so "
        "that runs with different seeds share it."
      )


def train_one(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """One run: train `config.model.bits`-bit codes, evaluate the final model, write the workdir.

  Resumes from the newest checkpoint in `workdir`; returns the saved results of a finished run.
  """
  return train_together([config], [workdir])[0]


def _member(tree, k: int, stacked: bool):
  """Run k's part of a pytree with a leading member axis (the tree itself when not stacked)."""
  return jax.tree.map(lambda x: x[k], tree) if stacked else tree


def _stack(trees: list, stacked: bool):
  """Stacks the runs' pytrees along a new leading axis (the only tree when not stacked)."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees) if stacked else trees[0]


def train_together(configs: list[ml_collections.ConfigDict], workdirs: list[str]) -> list[dict]:
  """Trains several runs at once with one vmapped step (one run: a plain jitted step).

  The runs may differ only in `STACKABLE_FIELDS` (`check_stackable`); each has its own
  parameters, optimizer state, batch order, augmentation keys and hyperparameters, its own
  workdir with checkpoints, metrics and results, exactly as if trained alone (up to float
  rounding: the vmapped convolutions may sum in another order). Finished runs are skipped.
  Returns the results of every run, in order.
  """
  for config, workdir in zip(configs, workdirs, strict=True):
    validate_config(config)
    claim_workdir(config, workdir)
  check_stackable(configs)
  results = [finished_results(w) for w in workdirs]
  todo = [k for k, r in enumerate(results) if r is None]
  if todo:
    trained = _train_runs([configs[k] for k in todo], [workdirs[k] for k in todo])
    for k, r in zip(todo, trained, strict=True):
      results[k] = r
  return results


def _train_runs(configs: list[ml_collections.ConfigDict], workdirs: list[str]) -> list[dict]:
  """Trains unfinished runs that passed `check_stackable`; see `train_together`."""
  config, count = configs[0], len(configs)
  stacked = count > 1
  pooled, split = prepare_data(config)
  for workdir in workdirs:
    hio.write_npz(os.path.join(workdir, "split.npz"), **split.arrays())
  train_images, train_labels = pooled.images[split.train], pooled.labels[split.train]

  bits = config.model.bits
  mean, std = pixel_statistics(train_images)
  num_classes = objectives.num_class_outputs(config, train_labels.shape[1])
  model = models.build_model(config.model, mean, std, num_classes)
  multi_label = bool((train_labels.sum(axis=1) != 1).any())
  objective = objectives.make_objective(config, model, multi_label)
  targets, stage1 = [None] * count, [{}] * count
  if objective.batch_kind == "targets":
    targets, stage1 = zip(
      *(stage1_targets(c, train_labels, w) for c, w in zip(configs, workdirs, strict=True)),
      strict=True,
    )
  batches = [
    objectives.Batches(
      objective.batch_kind,
      train_images,
      train_labels,
      c.train.batch_size,
      c.seed,
      t,
      repeats=c.augment.get("repeats", 1),
    )
    for c, t in zip(configs, targets, strict=True)
  ]
  steps_per_epoch = batches[0].steps_per_epoch
  total_steps = (
    config.train.steps if config.train.steps > 0 else config.train.epochs * steps_per_epoch
  )
  optimizer = optim.make_optimizer(config.train, total_steps)
  schedule = optim.learning_rate_schedule(config.train, total_steps, peak=1.0)

  keys = [jax.random.split(jax.random.key(c.seed)) for c in configs]  # (init, augment) per run
  states = []
  for init_key, _ in keys:
    params = model.init(init_key, jnp.asarray(train_images[:1]))
    states.append({"params": params, "opt_state": optimizer.init(params)})
  hyper = _stack([objectives.hyperparameters(c) for c in configs], stacked)
  # Several devices: the batch split over them, the state replicated (hashing/parallel.py).
  mesh = parallel.data_mesh(config, batches[0].batch_size)
  batch_axis = (objective.batch_kind == "triplets") + stacked  # [K?, 3?, B, ...]
  chunk_steps = steps.scan_steps(config)
  if chunk_steps == 1:  # a Python loop over a jitted step, batches gathered on the host
    step_fn = steps.make_train_step(objective, optimizer, config.augment, count)
  else:  # chunks of steps in one lax.scan, the training arrays resident on the device
    per_run = ("targets",)  # stage-1 codes depend on the run's seed; images and labels do not
    data_axes = {name: 0 if name in per_run else None for name in batches[0].arrays}
    chunk_fn = steps.make_train_chunk(objective, optimizer, config.augment, count, data_axes)
    data = {
      name: _stack([b.arrays[name] for b in batches], stacked) if name in per_run else array
      for name, array in batches[0].arrays.items()
    }

  checkpointers = [checkpoint.Checkpointer(w) for w in workdirs]
  # Runs trained together save at the same steps; resume all from the newest common one.
  start_step = min(c.latest_step() or 0 for c in checkpointers)
  if start_step:
    states = [c.restore(start_step, s) for c, s in zip(checkpointers, states, strict=True)]
  state = _stack(states, stacked)
  if mesh is not None:
    state = parallel.replicate(state, mesh)
  if chunk_steps > 1:  # the training arrays go to the device(s) once, for the whole run
    data = jax.device_put(data) if mesh is None else parallel.replicate(data, mesh)
  metrics_paths = [os.path.join(w, "metrics.jsonl") for w in workdirs]
  for path in metrics_paths:
    hio.write_text(path, "".join(_records_up_to(path, start_step)))

  log_every = max(1, min(config.train.log_every, total_steps))
  save_every = max(1, config.train.checkpoint_every)
  # eval.every > 0: mAP of the model every that many steps into metrics.jsonl (a learning
  # curve for time-to-mAP comparisons); results.json still reports the final model only.
  eval_every, eval_seconds = config.eval.get("every", 0), 0.0
  window, window_start, window_first_step = [], time.perf_counter(), start_step
  mean_loss = np.full(count, np.nan)
  stalled_at = [None] * count  # the end of the first window with a vanished gradient
  start = time.perf_counter()
  runs = f" x {count} runs" if stacked else ""
  bar = tqdm.tqdm(
    total=total_steps,
    initial=start_step,
    desc=f"{config.method} {bits} bits{runs}",
    disable=None if parallel.is_main_process() else True,
    mininterval=1,
  )
  step = start_step
  while step < total_steps:
    # Up to the next step that logs, saves, evaluates or ends: chunks never straddle one.
    stops = [
      total_steps,
      (step // log_every + 1) * log_every,
      (step // save_every + 1) * save_every,
    ]
    stops += [(step // eval_every + 1) * eval_every] if eval_every else []
    span = range(step, min(step + chunk_steps, *stops))
    if chunk_steps == 1:
      batch = _stack([b(step) for b in batches], stacked)
      key = _stack([jax.random.fold_in(augment_key, step) for _, augment_key in keys], stacked)
      if mesh is not None:
        batch, key = parallel.shard(batch, mesh, batch_axis), parallel.replicate(key, mesh)
      state["params"], state["opt_state"], loss, grad_norm = step_fn(
        state["params"], state["opt_state"], batch, key, hyper
      )
    else:
      indices = _stack([np.stack([b.indices(s) for s in span]) for b in batches], stacked)
      fold = jax.vmap(jax.random.fold_in, in_axes=(None, 0))
      step_numbers = jnp.arange(span.start, span.stop)
      chunk_keys = _stack([fold(augment_key, step_numbers) for _, augment_key in keys], stacked)
      if mesh is not None:  # indices [K?, T, 3?, B]
        indices = parallel.shard(indices, mesh, batch_axis + 1)
        chunk_keys = parallel.replicate(chunk_keys, mesh)
      state["params"], state["opt_state"], loss, grad_norm = chunk_fn(
        state["params"], state["opt_state"], data, indices, chunk_keys, hyper
      )
    window.append((loss, grad_norm))
    step = done = span.stop
    is_log, is_save = (
      done % log_every == 0 or done == total_steps,
      done % save_every == 0 or done == total_steps,
    )
    is_eval = eval_every > 0 and done % eval_every == 0 and done < total_steps
    if not (is_log or is_save or is_eval):
      continue
    # [steps, runs, (loss, grad_norm)]: each window entry holds one step or one chunk
    values = np.concatenate(
      [
        np.stack([np.reshape(lo, (count, -1)), np.reshape(gn, (count, -1))], axis=-1)
        for lo, gn in jax.device_get(parallel.local_replica(window))
      ],
      axis=1,
    ).transpose(1, 0, 2)
    for k in range(count):
      _check_finite(values[:, k], window_first_step, checkpointers[k])
      if stalled_at[k] is None and stalled(values[:, k]):
        stalled_at[k] = done
        tqdm.tqdm.write(stall_warning(workdirs[k], done, float(values[-1, k, 0])), file=sys.stderr)
    if is_log:
      now = time.perf_counter()
      mean_loss = values[:, :, 0].mean(axis=0)
      for k, c in enumerate(configs):
        record = {
          "step": done,
          "epoch": done / steps_per_epoch,
          "loss": float(mean_loss[k]),
          "grad_norm": float(values[-1, k, 1]),
          "learning_rate": float(c.train.learning_rate * schedule(done - 1)),
          # Images of this run per second (runs trained together share the time).
          "images_per_sec": len(values) * batches[k].images_per_step / (now - window_start),
          "seconds": now - start - eval_seconds,  # of training, without evaluations
        }
        hio.append_jsonl(metrics_paths[k], record)
      bar.set_postfix(loss=f"{mean_loss[0]:.4f}", img_s=f"{record['images_per_sec']:.0f}")
      bar.update(len(values))
      window, window_start, window_first_step = [], now, done
    if is_eval:  # before the checkpoint, so that a resume never loses the line of its step
      eval_start = time.perf_counter()
      for k, c in enumerate(configs):
        params = parallel.local_replica(_member(state["params"], k, stacked))
        evaluation = evaluate_model(c, model, params, pooled, split, None)
        record = {"step": done, "seconds": eval_start - start - eval_seconds}
        hio.append_jsonl(metrics_paths[k], {**record, "eval_map": evaluation["map"]})
      eval_seconds += time.perf_counter() - eval_start
      window_start += time.perf_counter() - eval_start  # images/s counts training only
    if is_save:  # after the metrics lines, so that a resume never loses the line of its step
      for k, checkpointer in enumerate(checkpointers):
        checkpointer.save(done, _member(state, k, stacked))
  bar.close()
  train_seconds = time.perf_counter() - start - eval_seconds
  results = []
  for k, (c, workdir) in enumerate(zip(configs, workdirs, strict=True)):
    checkpointers[k].close()
    params = parallel.local_replica(_member(state["params"], k, stacked))
    hio.write_bytes(os.path.join(workdir, "params.msgpack"), flax.serialization.to_bytes(params))
    eval_start = time.perf_counter()
    evaluation = evaluate_model(c, model, params, pooled, split, workdir)
    run = {
      "method": c.method,
      "protocol": c.data.protocol,
      "source": c.data.source,
      "bits": bits,
      "seed": c.seed,
      "steps": total_steps,
      "resumed_from_step": start_step,
      "epochs": total_steps / steps_per_epoch,
      "final_loss": float(mean_loss[k]),
      "stalled_at_step": stalled_at[k],  # None, or where the gradient vanished (`stalled`)
      "train_seconds": train_seconds,
      "trained_together": count,  # runs sharing the vmapped step (and train_seconds)
      "eval_seconds": time.perf_counter() - eval_start,
      "num_train": int(split.train.size),
      "num_classes": num_classes,  # size of the class-label output (CNNH+), 0 if none
      **stage1[k],
      "image_shape": list(train_images.shape[1:]),  # [H, W, C] the model expects
      "pixel_mean": mean.tolist(),
      "pixel_std": std.tolist(),
      "evaluated": "final model",
      **run_info(),
      **evaluation,
    }
    results.append(write_results(workdir, run))
  return results
