"""Host allocator setting for compiled steps on CPU: keep freed memory instead of unmapping it.

Why: XLA:CPU allocates each program's temporary buffers (tens of MB for a flow's train
step) at every call and frees them at its end. glibc serves allocations that large with
mmap and returns them with munmap, so each call first-touches fresh pages and pays a page
fault per 4 KiB. On the 2-core CPU that was ~12 ms of a 46-70 ms train step
(benchmarks/README.md). Raising glibc's mmap and trim thresholds makes freed blocks stay in
the heap for the next call. The process's resident memory then stays at its peak instead of
shrinking between steps.

The same can be had without code, before the process starts:
MALLOC_MMAP_THRESHOLD_=2147483647 MALLOC_TRIM_THRESHOLD_=2147483647.
"""
import ctypes
import ctypes.util
import logging
import os
import sys

logger = logging.getLogger(__name__)

# glibc's mallopt parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# The largest value mallopt takes (an int); glibc caps the mmap threshold itself where lower.
_LARGEST = 2**31 - 1
OPT_OUT_ENV = "CNF_JAX_DEFAULT_MALLOC"


def keep_freed_host_memory() -> bool:
  """Sets glibc's mmap and trim thresholds to their maximum; True if both were applied.

  A no-op returning False off Linux/glibc (e.g. macOS, musl), or where the environment
  variable CNF_JAX_DEFAULT_MALLOC=1 asks to keep the allocator's defaults. Affects the
  allocations made after the call, so call it before the first compiled step runs.
  """
  if os.environ.get(OPT_OUT_ENV) == "1" or not sys.platform.startswith("linux"):
    return False
  name = ctypes.util.find_library("c")
  try:
    libc = ctypes.CDLL(name or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
  applied = bool(mallopt(M_MMAP_THRESHOLD, _LARGEST)) and bool(mallopt(M_TRIM_THRESHOLD, _LARGEST))
  if not applied:
    logger.info("mallopt refused the mmap/trim thresholds; the host allocator keeps its defaults")
  return applied
