"""Progress a person can watch: a bar with rate and ETA on a terminal, one line per interval otherwise.

  bar = Progress(total=3000, desc="cf", unit="steps", start=resumed_step)
  bar.update(done, loss=1.23)       # after each chunk of steps
  bar.close()

On a TTY the bar is redrawn in place (carriage return) at most every 0.1 s; when
stderr is not a TTY (CI logs, nohup) it prints one plain line at most every
`CNF_JAX_PROGRESS_EVERY` seconds (default 10) and at the end, so a log stays short.
`set_quiet(True)` (the CLIs' --quiet) or CNF_JAX_QUIET=1 silences every bar.
"""
import os
import sys
import time
from typing import IO, Optional

_QUIET = [os.environ.get("CNF_JAX_QUIET", "") not in ("", "0")]
TTY_INTERVAL_S = 0.1


def set_quiet(quiet: bool) -> None:
  """Silences (or re-enables) every progress display of this process."""
  _QUIET[0] = bool(quiet)


def is_quiet() -> bool:
  return _QUIET[0]


def format_seconds(seconds: float) -> str:
  """0:07, 12:30, 1:02:03."""
  seconds = int(round(max(0.0, seconds)))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
  """Progress of `total` units from `start` (e.g. the step a run resumed from).

  Only process 0 of a multi-process run should make one (the caller decides).
  """

  def __init__(self, total: int, desc: str, unit: str = "steps", start: int = 0,
               stream: Optional[IO] = None, interval_s: Optional[float] = None):
    self.total, self.desc, self.unit = int(total), desc, unit
    self.stream = stream or sys.stderr
    self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
    default = TTY_INTERVAL_S if self.tty else float(os.environ.get("CNF_JAX_PROGRESS_EVERY", "10"))
    self.interval_s = default if interval_s is None else interval_s
    self.start, self.done = int(start), int(start)
    self.t0 = time.perf_counter()
    self._last_shown = -float("inf")
    self._width = 0

  def line(self, info: dict) -> str:
    """The text shown for the current state: count, rate, ETA and `info` (e.g. loss)."""
    elapsed = time.perf_counter() - self.t0
    rate = (self.done - self.start) / elapsed if elapsed > 0 else 0.0
    eta = (self.total - self.done) / rate if rate > 0 else float("nan")
    parts = [f"{self.desc}", f"{self.done}/{self.total} {self.unit}"]
    if self.tty:
      filled = int(20 * self.done / max(1, self.total))
      parts.insert(1, "[" + "#" * filled + "-" * (20 - filled) + "]")
    parts.append(f"{rate:.3g} {self.unit}/s")
    # "took", not "done": notebooks and logs grep run status lines for " done ".
    parts.append("took " + format_seconds(elapsed) if self.done >= self.total
                 else "ETA " + (format_seconds(eta) if eta == eta else "?"))
    parts += [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items()]
    return "  ".join(parts)

  def update(self, done: int, **info) -> None:
    """Records `done` units and shows the line if the interval has passed (always at the end)."""
    self.done = int(done)
    now = time.perf_counter()
    if is_quiet() or (now - self._last_shown < self.interval_s and self.done < self.total):
      return
    self._last_shown = now
    text = self.line(info)
    if self.tty:
      self.stream.write("\r" + text.ljust(self._width))
      self._width = len(text)
      if self.done >= self.total:
        self.stream.write("\n")
    else:
      self.stream.write(text + "\n")
    self.stream.flush()

  def close(self) -> None:
    """Ends a TTY bar that stopped short of its total (an error or a stop) with a newline."""
    if self.tty and self._width and self.done < self.total and not is_quiet():
      self.stream.write("\n")
      self.stream.flush()
