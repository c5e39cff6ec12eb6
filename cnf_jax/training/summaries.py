"""What a run records while it trains: metrics.jsonl and TensorBoard event files.

  writer = MetricsWriter("<workdir>/metrics.jsonl")
  writer.write({"model": "cf", "step": 100, "loss": 1.2, "lr": 5e-4, ...})

Every record becomes one JSON line (readable by a notebook) and, per model, TensorBoard
scalars `<metric>` in `<workdir>/tensorboard/<model>/` (`tensorboard --logdir <workdir>`
shows every model's loss, criterion and learning rate side by side); `write_hparams`
adds the run's settings with its final metrics (TensorBoard's HPARAMS tab). Event files
are written with tensorboardX, without TensorFlow. Only process 0 writes.

A resumed run first calls drop_after(model, step): JSON lines past the restored
checkpoint are removed and TensorBoard events from that step on are purged, so
neither holds the steps of the interrupted attempt twice.
"""
import json
import logging
import os
import time
from typing import Any, Dict, Optional

import jax

from cnf_jax.files import atomic_write

logger = logging.getLogger(__name__)
TENSORBOARD_DIR = "tensorboard"


def _summary_writer(logdir: str, purge_step: Optional[int] = None):
  """A tensorboardX SummaryWriter, or None (with a warning once) if tensorboardX is missing."""
  try:
    from tensorboardX import SummaryWriter
  except ImportError:  # a dependency of cnf_jax; missing only in a hand-made environment
    if not getattr(_summary_writer, "warned", False):
      logger.warning("tensorboardX is not installed: no TensorBoard event files (pip install tensorboardX)")
      _summary_writer.warned = True
    return None
  # A unique suffix: tensorboardX names files by the second and host, so a writer reopened in the
  # same second (a quick resume) would otherwise overwrite the earlier file.
  return SummaryWriter(logdir, purge_step=purge_step, flush_secs=30,
                       filename_suffix=f".{os.getpid()}.{time.time_ns()}")


class MetricsWriter:
  """Appends one JSON object per line to `path` and mirrors each record to TensorBoard."""

  def __init__(self, path: str, tensorboard: bool = True):
    self.path = path
    self.tensorboard = tensorboard
    self._boards: Dict[str, Any] = {}
    self._purge: Dict[str, int] = {}

  @property
  def primary(self) -> bool:
    return jax.process_index() == 0

  def drop_after(self, model: str, step: int) -> None:
    """Forgets what `model` logged past `step` (written after the checkpoint a resume starts
    from), repeated (model, step) lines and torn lines (a write cut short), so a resumed run
    never holds duplicates."""
    if not self.primary:
      return
    self._purge[model] = step + 1
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      raw = [l for l in f if l.strip()]
    kept, seen = [], set()
    for line in raw:
      try:
        record = json.loads(line)
      except ValueError:
        continue   # torn
      key = (record.get("model"), record.get("step"))
      if (record.get("model") == model and record.get("step", 0) > step) or key in seen:
        continue
      seen.add(key)
      kept.append(record)
    if len(kept) != len(raw):
      with atomic_write(self.path) as f:
        f.writelines(json.dumps(l) + "\n" for l in kept)

  def _board(self, model: str):
    if model not in self._boards:
      logdir = os.path.join(os.path.dirname(os.path.abspath(self.path)), TENSORBOARD_DIR, model)
      self._boards[model] = _summary_writer(logdir, self._purge.pop(model, None))
    return self._boards[model]

  def write(self, record: Dict[str, Any]) -> None:
    """One record {"model", "step", metric: float, ...}: a JSON line and the model's scalars."""
    if not self.primary:
      return
    with open(self.path, "a") as f:
      end = f.tell()
      try:
        f.write(json.dumps(record) + "\n")
        f.flush()
      except OSError:
        f.truncate(end)   # no torn line (e.g. the disk filled up mid-write)
        raise
    board = self._board(record["model"]) if self.tensorboard and "model" in record else None
    if board is not None:
      for key, value in record.items():
        if key not in ("model", "step") and isinstance(value, (int, float)):
          board.add_scalar(key, value, record["step"])

  def write_hparams(self, hparams: Dict[str, Any], final: Dict[str, float]) -> None:
    """The run's settings (flat dotted keys -> number/str/bool) with its final metrics."""
    if not (self.primary and self.tensorboard):
      return
    board = _summary_writer(os.path.join(os.path.dirname(os.path.abspath(self.path)), TENSORBOARD_DIR, "hparams"))
    if board is not None:
      board.add_hparams(hparams, final, name=".")
      board.close()

  def close(self) -> None:
    """Flushes and closes the event files (records written after this reopen them)."""
    for board in self._boards.values():
      if board is not None:
        board.close()
    self._boards.clear()
