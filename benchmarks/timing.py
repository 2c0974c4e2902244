"""Shared pieces of the benchmark scripts: a real config loaded by path, a runner of the
project's jitted train step, and best-of-rounds timing that alternates the contestants so that
they all see the same machine load."""

from __future__ import annotations

import pathlib
import sys
import time
from collections.abc import Callable

import jax

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hashing import models, objectives, optim, parallel, steps, sweeps  # noqa: E402

# CIFAR-10-like per-channel input statistics for the models of the benchmarks.
PIXEL_MEAN, PIXEL_STD = [125.0, 123.0, 114.0], [63.0, 62.0, 66.0]


def load_config(name: str, arg: str, augment: bool = False):
  """`configs/<name>.py`'s config for `arg`; augmentation off unless `augment` (fixed batches
  for step timings)."""
  config = sweeps.load_config(str(ROOT / "configs"), f"{name}:{arg}")
  if not augment:
    config.augment.flip, config.augment.crop_padding = False, 0
  return config


def step_runner(config, batch: dict) -> Callable[[int], None]:
  """`run(num_steps)`: the jitted train step of `config` (Adam etc. as configured) applied
  `num_steps` times to the fixed `batch` (a `Batches` dict), placed as the trainer places it:
  the batch split over all devices when there are several (`parallel.data_mesh`), the state
  replicated. `run.flops_per_step` is XLA's count of the compiled step's floating-point
  operations."""
  model = models.build_model(config.model, PIXEL_MEAN, PIXEL_STD)
  optimizer = optim.make_optimizer(config.train, 10_000)
  first = batch["images"].reshape(-1, *batch["images"].shape[-3:])[:1]
  params = model.init(jax.random.key(0), first)
  state = {"params": params, "opt": optimizer.init(params)}
  objective = objectives.make_objective(config, model)
  step = steps.make_train_step(objective, optimizer, config.augment)
  hyper, key = objectives.hyperparameters(config), jax.random.key(1)
  mesh = parallel.data_mesh(config, config.train.batch_size)
  if mesh is None:
    batch = jax.device_put(batch)  # on the device once, as the training data and PyTorch's are
  else:
    batch = parallel.shard(batch, mesh, int(objective.batch_kind == "triplets"))
    state, key = parallel.replicate(state, mesh), parallel.replicate(key, mesh)
  step = step.lower(state["params"], state["opt"], batch, key, hyper).compile()
  cost = step.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # a list in older JAX versions

  def run(num_steps):
    for _ in range(num_steps):
      params, opt = state["params"], state["opt"]
      state["params"], state["opt"], loss, _ = step(params, opt, batch, key, hyper)
    loss.block_until_ready()

  # XLA counts one device's share of a sharded step: the whole step is that times the devices.
  devices = 1 if mesh is None else mesh.size
  run.flops_per_step = devices * float((cost or {}).get("flops", float("nan")))
  return run


def best_seconds(
  runners: dict[str, Callable[[int], None]], num_steps: int, rounds: int, warmup: int = 2
) -> dict[str, float]:
  """Each runner's best time for `num_steps` over `rounds` alternating rounds, after warm-up
  (compilation) steps."""
  for run in runners.values():
    run(warmup)
  best = {name: float("inf") for name in runners}
  for _ in range(rounds):
    for name, run in runners.items():
      start = time.perf_counter()
      run(num_steps)
      best[name] = min(best[name], time.perf_counter() - start)
  return best
