"""Matplotlib helpers: a headless backend and atomic PNG writes."""
import os
from cnf_jax.files import atomic_write


def pyplot():
  """matplotlib.pyplot on the non-interactive Agg backend (works without a display)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def save_figure(fig, path: str, dpi: int = 110) -> str:
  """Writes `fig` to `path` through a temp file (no half-written PNG), closes it; returns the file name."""
  plt = pyplot()
  try:
    with atomic_write(path, "wb") as f:
      fig.savefig(f, dpi=dpi, format=os.path.splitext(path)[1][1:] or "png")
  finally:
    plt.close(fig)
  return os.path.basename(path)
