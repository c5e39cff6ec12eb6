"""SIGTERM as a request to stop at the next chunk end with a checkpoint (preemptible VMs, schedulers).

  preemption.install()          # a CLI, once, in the main thread
  ...
  if preemption.requested():    # the training loop, at every chunk end: save, then
    raise preemption.Preempted(...)

A preemptible TPU VM or a batch scheduler sends SIGTERM and kills the process some
seconds later. The handler only sets a flag; the loop sees it when the running chunk
ends (chunks end at log steps, a few seconds apart), saves every model at that step
and raises Preempted, which the CLIs turn into exit code EXIT_PREEMPTED. Chunk bounds
depend only on where they start (loop.chunk_bounds), so rerunning the same command
resumes from that step and ends bit-identical to an uninterrupted run.

A second SIGTERM while the first is handled kills at once (the default action), so
`kill` twice still stops a stuck run. Library use (the detector) never installs the
handler: there SIGTERM keeps its default meaning.

Python runs a signal handler only when the main thread is back in the interpreter. A long
C call (sklearn's tree KDE scoring one run of 1,280-d features takes minutes) holds every
SIGTERM until it returns: the handler never got to reset the default action, so `kill`
twice did nothing. A watcher thread therefore reads the signal numbers that Python's C-level
handler writes to its wakeup fd as each signal arrives: it sets the request at the first
SIGTERM and ends the process at the second (exit status 143, 128 + SIGTERM, what a shell
reports for a SIGTERM kill), wherever the main thread is. Between runs of a sweep the
experiment checks `requested()` too (experiment.train_and_evaluate_many), so a sweep of
baselines only stops after the run it is scoring, keeping the finished ones.
"""
import os
import signal
import threading
from typing import Optional

# sysexits.h EX_TEMPFAIL: "try again later", what a scheduler should do after a preemption.
EXIT_PREEMPTED = 75

_requested = threading.Event()
_wakeup_write_fd: Optional[int] = None   # the fd registered with signal.set_wakeup_fd, once per process
_sigterms_seen = [0]   # SIGTERMs the watcher saw since `install`


class Preempted(Exception):
  """Training stopped at a chunk end after SIGTERM; the message says which step was saved."""


def _handle(signum, frame):
  del frame
  _requested.set()
  signal.signal(signum, signal.SIG_DFL)   # a second SIGTERM is not deferred


def _watch(read_fd: int) -> None:
  """The watcher thread: sees each signal as it arrives (one byte, its number, per signal)."""
  while True:
    try:
      arrived = os.read(read_fd, 64)
    except OSError:
      return
    if not arrived:
      return
    for signum in arrived:
      if signum != signal.SIGTERM:
        continue
      # Counted here, not read off the request: the main thread's handler may have set it first.
      _sigterms_seen[0] += 1
      if _sigterms_seen[0] > 1:
        os._exit(128 + signal.SIGTERM)   # the second SIGTERM: what the default action would do
      _requested.set()


def install() -> None:
  """Makes SIGTERM request a checkpointed stop (call from the main thread of a CLI)."""
  global _wakeup_write_fd
  _requested.clear()
  _sigterms_seen[0] = 0
  signal.signal(signal.SIGTERM, _handle)
  if _wakeup_write_fd is None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)   # set_wakeup_fd's requirement: the C handler must never block
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    _wakeup_write_fd = write_fd
    threading.Thread(target=_watch, args=(read_fd,), name="sigterm-watcher", daemon=True).start()


def requested() -> bool:
  """True once SIGTERM arrived (after `install`)."""
  return _requested.is_set()
