"""Atomic file writes: a reader sees the old file or the complete new one, never half of one.

  with atomic_write(path, "wb") as f:      # writes <path>.tmp<suffix>, renames it to path on success
    np.savez(f, x=x)
  write_json_atomic(path, {"auroc": ...})

On an exception inside the block the temporary file is removed and `path` is untouched;
a full disk becomes disk.DiskFullError (one line naming the path and the space it needs).
"""
import contextlib
import json
import os
from typing import IO, Iterator

from cnf_jax import disk
from cnf_jax.errors import UserInputError


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", suffix: str = "", fsync: bool = False) -> Iterator[IO]:
  """Opens <path>.tmp<suffix> for writing and renames it over `path` when the block ends.

  suffix: kept at the end of the temporary name for writers that pick the format by
  extension. fsync: flush the data to the disk before the rename (files a later step
  trusts after a power loss, e.g. the extractor's shards).
  """
  tmp = f"{path}.tmp{suffix}"
  try:
    with open(tmp, mode) as f:
      yield f
      if fsync:
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException as e:
    written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    if isinstance(e, Exception) and not isinstance(e, disk.DiskFullError) and disk.is_disk_full(e):
      raise disk.full_error(path, written, os.path.basename(path), lower_bound=True) from None
    raise


def check_writable_path(path: str, what: str) -> None:
  """One-line UserInputError when `path` cannot be a file: its folder is missing, or it is a folder."""
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise UserInputError(f"cannot write the {what} to {path}: the folder {folder} does not exist; create it first")
  if os.path.isdir(path):
    raise UserInputError(f"cannot write the {what} to {path}: it is a folder; give a file path")


def write_json_atomic(path: str, obj) -> None:
  """Writes `obj` as indented, key-sorted JSON to `path`, atomically."""
  with atomic_write(path) as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")
