"""Host allocator setting for compiled steps on CPU: keep freed memory instead of unmapping it.

Why: XLA:CPU allocates each program's temporary buffers (tens of MB for a flow's train
step) at every call and frees them at its end. glibc serves allocations that large with
mmap and returns them with munmap, so each call first-touches fresh pages and pays a page
fault per 4 KiB. On the 2-core CPU that was ~12 ms of a 46-70 ms train step
(benchmarks/README.md). Raising glibc's mmap and trim thresholds keeps freed blocks in the
heap for the next call; the process's resident memory then stays at its peak.

Chosen by the environment variable CNF_JAX_HOST_MALLOC = "keep" | "default" ("default" is
glibc's own behaviour); where it is unset, the command-line tools (main, sweep, score) and the
benchmarks keep. The price is resident memory: it stays at the process's peak instead of
shrinking between calls. The library (ContrastiveFlowDetector) never changes a user's allocator.

"keep" was opt-in for the CLIs from 2026-11-28 to 2026-12-04, after one CLI run aborted in the
first CI run with it on. The allocator was not the cause: an abort of the same kind (SIGABRT in
a CLI run of the tests, under load) had come hours before this module existed. The cause found
later: with several CPU devices (the test suite runs its CLIs on two), the loop of that time
queued up to log_every data-parallel steps unwaited, and XLA's in-process all-reduce deadlocks
and aborts under such a queue (tests/test_runahead.py, benchmarks/results/soak/README.md). The
loop now waits for every compiled chunk.

The same can be had without code, before the process starts:
MALLOC_MMAP_THRESHOLD_=2147483647 MALLOC_TRIM_THRESHOLD_=2147483647.
"""
import ctypes
import ctypes.util
import logging
import os
import sys

from cnf_jax.errors import UserInputError

logger = logging.getLogger(__name__)

ENV = "CNF_JAX_HOST_MALLOC"
MODES = ("keep", "default")
# glibc's mallopt parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_LARGEST = 2**31 - 1   # the largest value mallopt takes (an int)


def keep_freed_host_memory() -> bool:
  """Sets glibc's mmap and trim thresholds to their maximum; True if both were applied.

  A no-op returning False off Linux/glibc (e.g. macOS, musl). Affects the allocations
  made after the call, so call it before the first compiled step runs.
  """
  if not sys.platform.startswith("linux"):
    return False
  # glibc's soname first: ctypes.util.find_library would run `ldconfig -p` in a child process,
  # and this runs in every CLI process, after jax has started its threads.
  try:
    mallopt = ctypes.CDLL("libc.so.6").mallopt
  except (OSError, AttributeError):
    try:
      mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
      return False
  mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
  applied = bool(mallopt(M_MMAP_THRESHOLD, _LARGEST)) and bool(mallopt(M_TRIM_THRESHOLD, _LARGEST))
  if not applied:
    logger.info("mallopt refused the mmap/trim thresholds; the host allocator keeps its defaults")
  return applied


CLI_DEFAULT = "keep"


def configure(default: str = CLI_DEFAULT) -> str:
  """Applies $CNF_JAX_HOST_MALLOC (or `default` where unset); returns "kept" or "default".

  Raises UserInputError for a value other than "keep" or "default".
  """
  mode = os.environ.get(ENV, default)
  if mode not in MODES:
    raise UserInputError(f"{ENV}={mode!r} is not one of {', '.join(MODES)}; unset it for the default "
                         f"({default}), or see cnf_jax/training/host_memory.py")
  return "kept" if mode == "keep" and keep_freed_host_memory() else "default"
