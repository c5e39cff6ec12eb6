"""Reading a CSV table with a header row: the part every CSV reader of the project shares."""
import csv
from typing import List, Tuple

from cnf_jax.errors import UserInputError


def read_rows(path: str) -> Tuple[List[str], List[List[str]]]:
  """(header with stripped names, data rows without blank lines) of a text CSV file.

  Raises UserInputError for a binary (non-UTF-8) or empty file.
  """
  try:
    with open(path, newline="") as f:
      rows = list(csv.reader(f))
  except UnicodeDecodeError:
    raise UserInputError(f"{path} is not a text CSV file") from None
  if not rows:
    raise UserInputError(f"{path} is empty; expected a header row and one row per sample")
  return [h.strip() for h in rows[0]], [r for r in rows[1:] if r]
