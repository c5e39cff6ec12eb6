"""Host allocator setting for compiled steps on CPU: keep freed memory instead of unmapping it.

Why: XLA:CPU allocates each program's temporary buffers (tens of MB for a flow's train
step) at every call and frees them at its end. glibc serves allocations that large with
mmap and returns them with munmap, so each call first-touches fresh pages and pays a page
fault per 4 KiB. On the 2-core CPU that was ~12 ms of a 46-70 ms train step
(benchmarks/README.md). Raising glibc's mmap and trim thresholds keeps freed blocks in the
heap for the next call; the process's resident memory then stays at its peak.

Chosen by the environment variable CNF_JAX_HOST_MALLOC = "keep" | "default":
- the command-line tools (main, sweep, score) default to "default": glibc's own behaviour.
  The first CI run with "keep" as their default had one CLI run die with SIGABRT, not seen
  in 150 reruns since, nor in the soak of benchmarks/results/soak (125 processes killed and
  resumed at random, 65 with "keep", some under glibc's heap checker). With "keep" a large
  block sits on the heap next to others, so a small overrun past its end, harmless in an
  mmapped block's page padding, corrupts a neighbour and glibc aborts: the one mechanism
  found that only "keep" has; none was caught. Until the cause is found, "keep" is opt-in there.
- the benchmarks default to "keep", for both implementations they compare.

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
  try:
    mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
  applied = bool(mallopt(M_MMAP_THRESHOLD, _LARGEST)) and bool(mallopt(M_TRIM_THRESHOLD, _LARGEST))
  if not applied:
    logger.info("mallopt refused the mmap/trim thresholds; the host allocator keeps its defaults")
  return applied


def configure(default: str) -> str:
  """Applies $CNF_JAX_HOST_MALLOC (or `default` where unset); returns "kept" or "default".

  Raises UserInputError for a value other than "keep" or "default".
  """
  mode = os.environ.get(ENV, default)
  if mode not in MODES:
    raise UserInputError(f"{ENV}={mode!r} is not one of {', '.join(MODES)}; unset it for the default "
                         f"({default}), or see cnf_jax/training/host_memory.py")
  return "kept" if mode == "keep" and keep_freed_host_memory() else "default"
