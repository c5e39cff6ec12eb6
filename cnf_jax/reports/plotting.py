"""Matplotlib helpers: a headless backend and atomic PNG writes."""
import os


def pyplot():
  """matplotlib.pyplot on the non-interactive Agg backend (works without a display)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def save_figure(fig, path: str, dpi: int = 110) -> str:
  """Writes `fig` to `path` through a temp file (no half-written PNG), closes it; returns the file name."""
  plt = pyplot()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=dpi)
  plt.close(fig)
  os.replace(tmp, path)
  return os.path.basename(path)
