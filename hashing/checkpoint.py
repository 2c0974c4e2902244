"""Training checkpoints (orbax): save every N steps and at the end, resume from the latest.

The checkpointed state is the pytree `{"params": ..., "opt_state": ...}`; the step is the
checkpoint's name. Everything else a resumed run needs is a function of (config, step): the
batch order (`hashing/sampling.py`) and the augmentation keys (`fold_in(key, step)`), so a
resumed run ends with the same codes as an uninterrupted one. Orbax writes each checkpoint into
a temporary directory and renames it when complete, so a killed run never leaves a
half-written checkpoint behind.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp


class Checkpointer:
  """Keeps the two newest checkpoints in `<workdir>/checkpoints/<step>/`."""

  def __init__(self, workdir: str):
    self._manager = ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), "checkpoints"),
      options=ocp.CheckpointManagerOptions(
        max_to_keep=2, create=True, enable_async_checkpointing=False
      ),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    self._manager.wait_until_finished()

  def restore(self, step: int, like: Any) -> Any:
    """Restores checkpoint `step` into the structure (and dtypes) of `like`."""
    return self._manager.restore(step, args=ocp.args.StandardRestore(like))

  def close(self) -> None:
    self._manager.close()
