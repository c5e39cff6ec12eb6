"""Orbax checkpoints of a TrainState: save every N steps, resume from the newest usable one.

Orbax writes each step to a temporary directory and renames it when complete,
so a run killed mid-save leaves the previous checkpoint intact. A step that was
complete but is damaged later (a truncated data file, an empty _METADATA, a garbled
manifest) is found on restore: `restore_newest` tries the steps newest first, checks
what it read (shapes, dtypes, finite values, the step counter) and moves a step that
fails to <directory>.unusable/<step>, so that training can write that step again.
"""
import contextlib
import logging
import os
import shutil
import sys
import time
from typing import Any, Callable, Iterator, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from cnf_jax import disk

logger = logging.getLogger(__name__)


def describe_error(error: BaseException) -> str:
  """The first line of an orbax / tensorstore error, short enough for one log line."""
  text = str(error).strip().splitlines()[0] if str(error).strip() else ""
  text = text.split(" See full TensorStore details")[0]   # the rest is a repr of the whole spec
  return f"{type(error).__name__}: {text[:160]}" if text else type(error).__name__


def _leaves(tree: Any) -> dict:
  """{path: (shape, dtype)} of a pytree; paths, not container types, so a restored plain dict
  compares equal to the model's FrozenDict."""
  return {jax.tree_util.keystr(p): (np.shape(a), np.asarray(a).dtype)
          for p, a in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_shapes(restored: Any, like: Any) -> Optional[str]:
  """Why `restored` does not have the leaves, shapes and dtypes of `like`, or None."""
  got, want = _leaves(restored), _leaves(like)
  if set(got) != set(want):
    extra, missing = sorted(set(got) - set(want)), sorted(set(want) - set(got))
    return f"its arrays differ from the model's (missing {missing[:2]}, unexpected {extra[:2]})"
  for path, (shape, dtype) in want.items():
    if got[path] != (shape, dtype):
      return f"{path} is {got[path][1]}{list(got[path][0])}, expected {dtype}{list(shape)}"
  return None


def check_finite(restored: Any) -> Optional[str]:
  """Why `restored` is not finite (a NaN or inf in a floating-point leaf), or None."""
  for path, a in jax.tree_util.tree_flatten_with_path(restored)[0]:
    a = np.asarray(a)
    if np.issubdtype(a.dtype, np.inexact) and not np.isfinite(a).all():
      return f"{jax.tree_util.keystr(path)} holds non-finite values"
  return None


def check_restored(restored: Any, like: Any) -> Optional[str]:
  """Why `restored` is not a usable copy of a tree shaped like `like`, or None when it is."""
  return check_shapes(restored, like) or check_finite(restored)


class _DropOrbaxErrors(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname)


@contextlib.contextmanager
def _orbax_thread_errors_silenced() -> Iterator[None]:
  """Orbax's writer threads log each failure with a traceback before the save re-raises it;
  the caller reports the raised error (one line for a full disk), so those copies are dropped."""
  absl_logger, dropper = logging.getLogger("absl"), _DropOrbaxErrors()
  absl_logger.addFilter(dropper)
  try:
    yield
  finally:
    absl_logger.removeFilter(dropper)


def _from_orbax(obj) -> bool:
  code = getattr(obj, "cr_code", None)   # a coroutine
  return code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename


class _DropOrbaxTaskErrors(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not (message.startswith("Task exception was never retrieved") and f"{os.sep}orbax{os.sep}" in message)


def quiet_orbax_after_failures() -> None:
  """For the CLIs: after a failed read or write (a damaged checkpoint, a full disk), orbax leaves
  tasks and coroutines behind whose errors Python prints later, one traceback each, and its
  tensorstore callbacks still arrive on its closed event loop ('Event loop is closed'). The
  failure itself is reported (one line), so those copies are dropped; everything else still
  reaches the previous hook and the asyncio logger."""
  previous = sys.unraisablehook

  def hook(unraisable):
    closed_loop = isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"
    if closed_loop or _from_orbax(unraisable.object):
      return
    previous(unraisable)

  sys.unraisablehook = hook
  logging.getLogger("asyncio").addFilter(_DropOrbaxTaskErrors())


class Checkpoints:
  """Checkpoints of one model under `directory` (one sub-directory per step).

  read_only: open existing checkpoints without creating the directory or writing
  anything (the score CLI, a finished run in a read-only workdir).
  """

  def __init__(self, directory: str, keep: int = 2, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only, read_only=read_only,
                                           enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._failed_steps = []   # steps whose save failed here: their leftovers are removed again at close()
    if not read_only:
      self._remove_temporary()

  def _remove_temporary(self) -> None:
    """Deletes `<step>.orbax-checkpoint-tmp*` entries: saves that never finished (a kill during a
    save, or the writer threads of a failed save that outlived its removal). The workdir lock
    admits one writer, so no save of another process can be in flight here."""
    for name in os.listdir(self.directory):
      if ".orbax-checkpoint-tmp" in name:
        path = os.path.join(self.directory, name)
        logger.info("removing %s: a checkpoint save that did not finish", path)
        if os.path.isdir(path):
          shutil.rmtree(path, ignore_errors=True)
        else:
          os.remove(path)

  def latest_step(self):
    """The newest saved step, or None."""
    return self._manager.latest_step()

  def all_steps(self):
    """Every saved step, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state) -> None:
    """Saves `state` as `step`. When the disk is full: removes the partial step and raises
    disk.DiskFullError naming the directory and about how much space a step needs."""
    previous = self.latest_step()
    # A step takes the space of the previous one; the first about its arrays' bytes plus two
    # blocks of metadata per array (orbax's files). Checked first, so that a full disk is found
    # before orbax's writer threads fail (they log tracebacks of their own).
    leaves = jax.tree.leaves(state)
    needed = (disk.tree_size(os.path.join(self.directory, str(previous))) if previous is not None
              else sum(np.asarray(x).nbytes for x in leaves) + 3072 * len(leaves))
    # With a margin (orbax's temporary directory and metadata): a check that passes by a few
    # blocks would leave the failure to orbax's writer threads.
    needed += needed // 10 + 16 * 1024
    disk.check_free(self.directory, needed, f"checkpoint step {step}")
    try:
      with _orbax_thread_errors_silenced():
        self._manager.save(step, args=ocp.args.StandardSave(state))
        self._manager.wait_until_finished()
    except Exception as e:
      if not disk.is_disk_full(e):
        raise
      written = self._remove_partial(step)
      self._failed_steps.append(step)
      raise disk.full_error(self.directory, max(needed, written),
                            f"checkpoint step {step}", lower_bound=previous is None) from None

  def _remove_partial(self, step: int, quiet_s: float = 1.0, timeout_s: float = 30.0) -> int:
    """Deletes what a failed save of `step` left (its temporary or final directory); returns
    the bytes it held (what had been written).

    The error can reach us while tensorstore's writer threads of the same save are still
    failing one by one, and each may create a directory or file after a first rmtree (seen
    under load: a `<step>.orbax-checkpoint-tmp/default.orbax-checkpoint-tmp` left behind). So it
    removes until nothing of the step has reappeared for `quiet_s` (at most `timeout_s`). A quiet
    period of 0.2 s still left such a directory in 1 of 3 runs of the full-disk test beside other
    work (2026-12-06); 1 s costs a second on an error path only."""
    written, quiet_since = 0, None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
      names = [n for n in os.listdir(self.directory)
               if n == str(step) or n.startswith(f"{step}.orbax-checkpoint-tmp")]
      if names:
        quiet_since = None
        for name in names:
          written += disk.tree_size(os.path.join(self.directory, name))
          shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
      elif quiet_since is None:
        quiet_since = time.monotonic()
      elif time.monotonic() - quiet_since >= quiet_s:
        break
      time.sleep(0.02)
    self._manager.reload()
    return written

  def restore(self, step: int, like):
    """Restores `step` into the structure, shapes, dtypes and shardings of `like`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def restore_newest(self, like, at_most: int, label: str = "model",
                     check: Callable[[Any, Any], Optional[str]] = check_restored) -> Tuple[int, Any]:
    """(step, state): the newest step <= at_most that restores into `like` and passes
    `check(state, like)` (and whose step counter, if it has one, equals the step), or
    (0, like) when none does. Each step that fails is moved aside with one warning line."""
    for step in sorted((s for s in self.all_steps() if s <= at_most), reverse=True):
      try:
        state = self.restore(step, like)
        problem = check(state, like)
        if problem is None and hasattr(state, "step") and int(state.step) != step:
          problem = f"its step counter is {int(state.step)}"
      except Exception as e:  # orbax and tensorstore raise many types (even bare Exception) for damaged files
        problem = describe_error(e)
      if problem is None:
        return step, state
      moved = self._move_aside(step)
      older = [s for s in self.all_steps() if s < step]
      logger.warning("%s: checkpoint step %d in %s does not restore (%s); moved it to %s and %s", label, step,
                     self.directory, problem, moved,
                     f"trying step {older[-1]}" if older else "training this model from scratch")
    return 0, like

  def delete_after(self, step: int) -> None:
    """Deletes the steps newer than `step` (a resume from `step` writes them again)."""
    for newer in [s for s in self.all_steps() if s > step]:
      self._manager.delete(newer)
    self._manager.reload()

  def _move_aside(self, step: int) -> str:
    """Moves step `step` to <directory>.unusable/<step> (kept for inspection); returns where."""
    target = os.path.join(f"{self.directory}.unusable", str(step))
    n = 1
    while os.path.exists(target):
      target, n = os.path.join(f"{self.directory}.unusable", f"{step}-{n}"), n + 1
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(os.path.join(self.directory, str(step)), target)
    self._manager.reload()
    return target

  def restore_variables(self, step: int) -> dict:
    """The flow variables {"params", "constants"} of `step`, as saved: no TrainState, optimiser
    or architecture needed to read them (the caller checks they fit its model)."""
    saved = self._manager.restore(step, args=ocp.args.StandardRestore())
    return {"params": saved["params"], "constants": saved.get("constants", {})}

  def close(self) -> None:
    # A failed save's writer threads can outlive _remove_partial's quiet period under load
    # (the full-disk test, 1 run in several): remove what they wrote once more on the way out.
    for step in self._failed_steps:
      self._remove_partial(step, quiet_s=0.2)
    self._manager.close()
