"""Atomic file writes: a reader sees the old file or the complete new one, never half of one.

  with atomic_write(path, "wb") as f:      # writes <path>.tmp<suffix>, renames it to path on success
    np.savez(f, x=x)
  write_json_atomic(path, {"auroc": ...})

On an exception inside the block the temporary file is removed and `path` is untouched.
"""
import contextlib
import json
import os
from typing import IO, Iterator


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
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def write_json_atomic(path: str, obj) -> None:
  """Writes `obj` as indented, key-sorted JSON to `path`, atomically."""
  with atomic_write(path) as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")
