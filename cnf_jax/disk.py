"""A full disk as one clear error instead of a traceback.

  disk.check_free(directory, needed_bytes, "checkpoint step 400")   # before a large write
  with disk.guard(path, "scores"):                                  # ENOSPC inside -> DiskFullError
    ...

Every writer of a run is atomic (files.atomic_write, orbax's temporary step directories),
so a write that fails for lack of space leaves the previous files as they were; the error
names the path, the space the write needs and what is free, and a rerun with room resumes.
"""
import contextlib
import errno
import os
import shutil
from typing import Iterator

from cnf_jax.errors import UserInputError

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = ("No space left on device", "Disk quota exceeded")


class DiskFullError(UserInputError):
  """The filesystem of the workdir (or --out) has too little free space; exit 2, one line."""


def is_disk_full(error: BaseException) -> bool:
  """True for ENOSPC / EDQUOT, also wrapped (orbax and tensorstore re-raise them as other types)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
      return True
    if any(t in str(error) for t in _FULL_TEXT):
      return True
    error = error.__cause__ or error.__context__
  return False


def free_bytes(path: str) -> int:
  """Free bytes on the filesystem that holds `path` (or its nearest existing parent)."""
  path = os.path.abspath(path)
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  return shutil.disk_usage(path).free


def tree_size(path: str) -> int:
  """Disk bytes the files under `path` use, as du counts them (whole blocks; 0 when it does
  not exist): what writing the same files again takes."""
  total = 0
  for directory, _, files in os.walk(path):
    for f in files:
      try:
        total += os.stat(os.path.join(directory, f)).st_blocks * 512
      except OSError:
        pass
  return total


def _mb(n: int) -> str:
  return f"{n / 2**10:.0f} KB" if n < 2**20 else f"{n / 2**20:.1f} MB" if n < 2**30 else f"{n / 2**30:.2f} GB"


def full_error(path: str, needed: int, what: str, lower_bound: bool = False) -> DiskFullError:
  """needed: the bytes the write takes (lower_bound: at least that many, e.g. what was written;
  0: unknown)."""
  need = (f"needs {'more than' if lower_bound else 'about'} {_mb(needed)}, " if needed > 0 else "")
  return DiskFullError(
      f"no space left on the device for {what}: {path} {need}{_mb(free_bytes(path))} free there; "
      "free some space and rerun the same command (it resumes from the last checkpoint)")


def check_free(path: str, needed: int, what: str) -> None:
  """DiskFullError when the filesystem of `path` has less than `needed` bytes free."""
  if free_bytes(path) < needed:
    raise full_error(path, needed, what)


@contextlib.contextmanager
def guard(path: str, what: str, needed: int = 0) -> Iterator[None]:
  """Turns a full-disk error inside the block into DiskFullError for `path`.

  needed: the bytes the block writes, if known (otherwise the message gives no amount).
  """
  try:
    yield
  except DiskFullError:
    raise
  except Exception as e:
    if not is_disk_full(e):
      raise
    raise full_error(path, needed, what, lower_bound=not needed) from None
