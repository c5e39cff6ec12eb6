"""Reading a user's (or a run's) .npz as {name: array}, with one clear error for a bad file.

  arrays = read_npz(path)      # UserInputError naming the file and what is wrong

np.load raises EOFError for an empty file, BadZipFile for a truncated or garbled one,
zlib.error / BadZipFile (bad CRC) when a member is damaged, ValueError for object
arrays, and returns a bare ndarray (not a mapping) for a .npy file.
"""
import zipfile
import zlib
from typing import Dict

import numpy as np

from cnf_jax.errors import UserInputError


def read_npz(path: str) -> Dict[str, np.ndarray]:
  """Every array of the .npz file at `path`, loaded (no pickles)."""
  try:
    with open(path, "rb") as f:
      head = f.read(6)
  except OSError as e:
    raise UserInputError(f"{path}: cannot be read ({e.strerror})") from None
  if not head:
    raise UserInputError(f"{path} is empty (0 bytes); write it with numpy.savez(path, name=array, ...)")
  if head == b"\x93NUMPY":
    raise UserInputError(f"{path} is a .npy file (one array); an .npz with named arrays is needed: "
                         "numpy.savez(path, name=array, ...)")
  try:
    loaded = np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
    raise UserInputError(f"{path} is not a readable .npz file (truncated or not an npz archive: "
                         f"{type(e).__name__})") from None
  if not isinstance(loaded, np.lib.npyio.NpzFile):
    raise UserInputError(f"{path} is not an .npz archive of named arrays (numpy.savez)")
  with loaded as f:
    arrays = {}
    for name in f.files:
      try:
        arrays[name] = f[name]
      except ValueError as e:
        raise UserInputError(f"{path}: array {name!r} cannot be read without pickle ({e})") from None
      except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise UserInputError(f"{path}: array {name!r} is damaged (truncated or garbled file: "
                             f"{type(e).__name__})") from None
  return arrays
