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
"""
import signal
import threading

# sysexits.h EX_TEMPFAIL: "try again later", what a scheduler should do after a preemption.
EXIT_PREEMPTED = 75

_requested = threading.Event()


class Preempted(Exception):
  """Training stopped at a chunk end after SIGTERM; the message says which step was saved."""


def _handle(signum, frame):
  del frame
  _requested.set()
  signal.signal(signum, signal.SIG_DFL)   # a second SIGTERM is not deferred


def install() -> None:
  """Makes SIGTERM request a checkpointed stop (call from the main thread of a CLI)."""
  _requested.clear()
  signal.signal(signal.SIGTERM, _handle)


def requested() -> bool:
  """True once SIGTERM arrived (after `install`)."""
  return _requested.is_set()
