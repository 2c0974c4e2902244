"""Data parallelism with `jax.sharding`: the batch is split along its batch axis over a
one-axis mesh ("data") of all devices, parameters and optimizer state are replicated, and XLA
inserts the reductions (the gradient sum, and the gathers a pairwise or in-batch triplet loss
needs across the whole batch). The jitted step is the same function as on one device.

Several hosts: every process runs the same program (`initialize_distributed` first). Each
loads the same data and draws the same batches, and places only its own devices' part of each
batch (`shard`); only process 0 writes files (`hashing/io.py`); evaluation runs on each
process's replica of the parameters (`local_replica`), so every process returns the same
results.
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hashing.errors import UserError


def initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> None:
  """Joins a multi-process run (`jax.distributed.initialize`); call before any JAX work.

  Without arguments JAX detects TPU pod slices, Slurm and Open MPI jobs itself; elsewhere
  give all three (`coordinator_address` = "host:port" of process 0, the same on every process).
  """
  given = [coordinator_address, num_processes, process_id]
  if any(v is not None for v in given) and any(v is None for v in given):
    raise UserError(
      "a multi-host run outside TPU/Slurm/Open MPI needs all of --coordinator_address=host:port,"
      " --num_processes=N and --process_id=i (0 on the coordinator host)."
    )
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  except (RuntimeError, ValueError) as e:
    raise UserError(f"could not join the multi-host run: {e}") from None


def is_main_process() -> bool:
  """True in process 0 and in every single-process run (which never initialises the JAX
  backend just to ask)."""
  return not jax.distributed.is_initialized() or jax.process_index() == 0


def local_replica(tree):
  """A replicated (possibly multi-host) tree as this process's own copy: each `jax.Array`
  leaf becomes its first addressable shard, a single-device array that can be fetched,
  serialised and used in computations that involve this process alone."""

  def local(x):
    return x.addressable_data(0) if isinstance(x, jax.Array) else x

  return jax.tree.map(local, tree)


def data_mesh(config: ml_collections.ConfigDict, batch_size: int) -> Mesh | None:
  """A mesh over all devices when `config.train.data_parallel` and there is more than one;
  None (plain single-device training) otherwise. `batch_size` must split evenly."""
  devices = jax.devices()
  if not config.train.get("data_parallel", True) or len(devices) == 1:
    return None
  if batch_size % len(devices):
    raise UserError(
      f"the batch of {batch_size} does not split over {len(devices)} devices; set "
      f"config.train.batch_size to a multiple of {len(devices)} (or data_parallel=False)."
    )
  return Mesh(np.array(devices), ("data",))


def replicate(tree, mesh: Mesh):
  """Every leaf of `tree` (the same value on every process) copied to all devices of `mesh`."""
  return _place(tree, NamedSharding(mesh, PartitionSpec()))


def shard(tree, mesh: Mesh, axis: int):
  """Every array leaf of `tree` (host numpy, the same on every process) split along `axis`
  over the mesh."""
  return _place(tree, NamedSharding(mesh, PartitionSpec(*[None] * axis, "data")))


def _place(tree, sharding: NamedSharding):
  """Puts each leaf on `sharding` from this process's full copy. One process: device arrays
  move device to device (`jax.device_put`, no wait for the host). Several: each process places
  only its own devices' pieces from a host copy (`jax.device_put` of a device array onto other
  processes' devices is refused)."""

  def place(x):
    if isinstance(x, jax.Array) and sharding.is_fully_addressable:
      return jax.device_put(x, sharding)
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(place(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(place, tree)
