"""One process per workdir: an exclusive lock on <workdir>/.lock for the whole run.

  with workdir_lock.hold([workdir, ...], wait=False):
    ...train and write...

The lock is fcntl.flock on the file, so the kernel releases it when its process dies
(SIGKILL, OOM, a crash): a lock file left by a dead process is stale and is taken over
at once. The file records who holds it (pid, host, start time, command), for the message
the second process prints. Without `wait` that process stops with UserInputError
(exit 2); with it, it waits until the holder ends.

flock works between processes of one host and on local and NFSv4 filesystems; on a
filesystem without locks (some FUSE mounts) `hold` raises a UserInputError saying so.
With jax.distributed only process 0 locks (all processes of one run share the workdir).
"""
import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from typing import Iterator, List, Sequence

from cnf_jax.errors import UserInputError

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
POLL_SECONDS = 1.0


def _holder(f) -> dict:
  f.seek(0)
  try:
    return json.loads(f.read() or "{}")
  except ValueError:
    return {}


def _describe(holder: dict) -> str:
  if not holder:
    return "another process"
  started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
  return (f"pid {holder.get('pid')} on {holder.get('host')} (since {started}: "
          f"{holder.get('command', '?')})")


def _pid_alive(pid) -> bool:
  try:
    os.kill(int(pid), 0)
  except (ProcessLookupError, ValueError, TypeError):
    return False
  except PermissionError:
    return True
  return True


def _acquire(workdir: str, wait: bool):
  """The open lock file of `workdir`, locked by this process."""
  path = os.path.join(workdir, LOCK_NAME)
  f = open(path, "a+")
  waited = False
  while True:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
      break
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        f.close()
        raise UserInputError(f"cannot lock workdir {workdir} ({e.strerror}); its filesystem may not "
                             "support file locks: use a local or NFS directory") from None
      holder = _holder(f)
      if not wait:
        f.close()
        raise UserInputError(f"workdir {workdir} is in use by {_describe(holder)}; wait for it to end, "
                             "pass --wait to wait for it, or use another --workdir") from None
      if not waited:
        logger.info("workdir %s is in use by %s; waiting for it to end", workdir, _describe(holder))
        waited = True
      time.sleep(POLL_SECONDS)
  previous = _holder(f)
  if previous.get("host") == socket.gethostname() and previous.get("pid") and not _pid_alive(previous["pid"]):
    logger.info("workdir %s: took over the stale lock of pid %s (no longer running)", workdir, previous["pid"])
  f.seek(0)
  f.truncate()
  f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                      "command": " ".join(sys.argv)[:300]}))
  f.flush()
  return f


@contextlib.contextmanager
def hold(workdirs: Sequence[str], wait: bool = False) -> Iterator[None]:
  """Locks every workdir (created if missing) for the duration of the block.

  Workdirs are locked in sorted order, so two sweeps that share runs and both wait
  cannot deadlock. The lock files stay (holding only who last ran there); only the
  lock itself is released.
  """
  held: List = []
  try:
    for workdir in sorted(set(map(os.path.abspath, workdirs))):
      held.append(_acquire(workdir, wait))
    yield
  finally:
    for f in held:
      fcntl.flock(f, fcntl.LOCK_UN)
      f.close()
