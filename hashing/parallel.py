"""Data parallelism over the local devices with `jax.sharding`: the batch is split along its
batch axis over a one-axis mesh ("data"), parameters and optimizer state are replicated, and
XLA inserts the reductions (the gradient sum, and the gathers a pairwise or in-batch triplet
loss needs across the whole batch). The jitted step is the same function as on one device.
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hashing.errors import UserError


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
  """Every leaf of `tree` copied to all devices of `mesh`."""
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard(tree, mesh: Mesh, axis: int):
  """Every array leaf of `tree` (host numpy, the same on every process) split along `axis`
  over the mesh; each process places only its own devices' pieces, so this also serves
  multi-host meshes."""
  sharding = NamedSharding(mesh, PartitionSpec(*[None] * axis, "data"))

  def place(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(place, tree)
