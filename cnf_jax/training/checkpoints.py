"""Orbax checkpoints of a TrainState: save every N steps, resume from the latest.

Orbax writes each step to a temporary directory and renames it when complete,
so a run killed mid-save leaves the previous checkpoint intact.
"""
import os

import jax
import orbax.checkpoint as ocp


class Checkpoints:
  """Checkpoints of one model under `directory` (one sub-directory per step)."""

  def __init__(self, directory: str, keep: int = 2):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self):
    """The newest saved step, or None."""
    return self._manager.latest_step()

  def all_steps(self):
    """Every saved step, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(state))
    self._manager.wait_until_finished()

  def restore(self, step: int, like):
    """Restores `step` into the structure, shapes, dtypes and shardings of `like`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def restore_variables(self, step: int) -> dict:
    """The flow variables {"params", "constants"} of `step`, as saved: no TrainState, optimiser
    or architecture needed to read them (the caller checks they fit its model)."""
    saved = self._manager.restore(step, args=ocp.args.StandardRestore())
    return {"params": saved["params"], "constants": saved.get("constants", {})}

  def close(self) -> None:
    self._manager.close()
