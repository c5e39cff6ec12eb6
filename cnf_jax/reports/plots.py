"""The report's PNGs: score histograms (paper Fig. 1 and 8) and the visual examples of Fig. 5.

Each setting (class) is shown by its finished run with the lowest seed. Scores
come from the run's scores.npz; the test images are read back from their image
source through <workdir>/test_index.npz (source and position of every scored
row, written by the image-feature tasks) and results["test_sources"] (the
feature datasets' metadata 'source_detail', e.g. 'zip:/data/cifar10-jpeg.zip:test').
Runs from before test_index.npz existed get the index by loading the task's
data again from config.json. A plot that cannot be made becomes a note in the
report, never an error.
"""
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from cnf_jax.reports import plotting
from cnf_jax.errors import UserInputError

PAPER_METHODS = ("cf", "flow", "flow_ratio", "oe", "mse", "mse_ratio", "kde", "pca", "knn", "lof", "abod", "mcd")


def _order(methods):
  methods = set(methods)
  return [m for m in PAPER_METHODS if m in methods] + sorted(methods - set(PAPER_METHODS))


def _safe(name: str) -> str:
  return "".join(ch if ch.isalnum() or ch in "-_=." else "_" for ch in name)


def representative_runs(runs: Sequence[Dict], settings: Sequence[str]) -> Dict[str, Dict]:
  """setting -> its finished run with the lowest seed."""
  out = {}
  for s in settings:
    done = [r for r in runs if r["setting"] == s and r["status"] == "done"]
    if done:
      out[s] = min(done, key=lambda r: (r["seed"] is None, r["seed"] or 0, r["run"]))
  return out


def load_scores(run: Dict) -> Dict[str, np.ndarray]:
  path = os.path.join(run["workdir"], "scores.npz")
  if not os.path.isfile(path):
    raise UserInputError(f"{path} is missing")
  with np.load(path) as z:
    return {k: z[k] for k in z.files}


def _bins(values: np.ndarray, n: int = 50) -> np.ndarray:
  lo, hi = np.percentile(values, [0.5, 99.5]) if len(values) else (0.0, 1.0)
  if hi <= lo:
    lo, hi = lo - 0.5, hi + 0.5
  return np.linspace(lo, hi, n + 1)


def score_histograms(run: Dict, path: str) -> str:
  """One panel per method: scores of the inlier and anomalous test images; the hardest anomaly class outlined."""
  from sklearn.metrics import roc_auc_score
  plt = plotting.pyplot()
  scores = load_scores(run)
  methods = _order(k[len("score_"):] for k in scores if k.startswith("score_"))
  if not methods:
    raise UserInputError(f"{run['workdir']}/scores.npz has no score_<method> arrays")
  is_anom = scores["is_anomaly"].astype(bool)
  results = run["results"]
  names = results.get("group_names") or []
  fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.4), squeeze=False)
  for ax, m in zip(axes[0], methods):
    s = scores[f"score_{m}"].astype(np.float64)
    finite = np.isfinite(s)
    bins = _bins(s[finite])
    clipped = np.clip(s, bins[0], bins[-1])  # the tails go into the outer bins
    ax.hist(clipped[~is_anom & finite], bins, density=True, alpha=0.6, color="tab:blue",
            label=f"inliers ({int((~is_anom).sum())})")
    ax.hist(clipped[is_anom & finite], bins, density=True, alpha=0.5, color="tab:red",
            label=f"anomalies ({int(is_anom.sum())})")
    by_group = {g: v[m] for g, v in results.get("auroc_by_group", {}).items() if m in v}
    if by_group and "group" in scores and names:
      hardest = min(by_group, key=by_group.get)
      if hardest in names:
        member = (scores["group"] == names.index(hardest)) & finite
        ax.hist(clipped[member], bins, density=True, histtype="step", color="black", linewidth=1.2,
                label=f"{hardest} ({100 * by_group[hardest]:.1f})")
    title = f"{m}: AUROC {100 * roc_auc_score(is_anom, np.nan_to_num(s, posinf=1e300)):.1f}"
    if (~finite).any():
      title += f" ({int((~finite).sum())} inf)"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("anomaly score (higher = more anomalous)")
    ax.legend(fontsize=7)
  axes[0][0].set_ylabel("density")
  fig.suptitle(f"{run['run']}: test scores", fontsize=11)
  fig.tight_layout()
  return plotting.save_figure(fig, path)


# --- Test images -------------------------------------------------------------------------------

def open_image_source(detail: str, data_dir: Optional[str] = None):
  """The extractor's image source behind a metadata 'source_detail' ('<kind>:<location>:<split>')."""
  from cnf_jax.extract import sources  # PIL and numpy only; no torch
  kind, _, rest = detail.partition(":")
  location, _, split = rest.rpartition(":")
  if not location or kind not in ("zip", "folder", "npz", "tfds"):
    raise UserInputError(f"source {detail!r} is not '<zip|folder|npz|tfds>:<location>:<split>'")
  if kind in ("zip", "folder"):
    return sources.open_source(location, split)
  return sources.open_source(f"{kind}:{location}", split, data_dir=data_dir)


def test_index(run: Dict) -> Tuple[List[str], np.ndarray, np.ndarray]:
  """(test sources, source id [T], index [T]) of the rows of scores.npz."""
  path = os.path.join(run["workdir"], "test_index.npz")
  if os.path.isfile(path) and run["results"].get("test_sources"):
    with np.load(path) as z:
      return list(run["results"]["test_sources"]), z["source_id"], z["index"]
  # Runs from before test_index.npz: load the task's data again (deterministic in config.json).
  import ml_collections
  from cnf_jax import tasks
  with open(os.path.join(run["workdir"], "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  data = tasks.get(config.task).load_data(config)
  if data.test_index is None:
    raise UserInputError(f"task {config.task!r} does not record where its test rows come from")
  return list(data.test_sources), data.test_source_id, data.test_index


def _as_rgb(image) -> np.ndarray:
  if isinstance(image, np.ndarray):
    return image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
  return np.asarray(image.convert("RGB"))


def example_images(run: Dict, method: str, k: int, opened: Dict, data_dir: Optional[str] = None):
  """Fig. 5 for one run: [(caption, [(image, score)])] for the k lowest-scored inliers, the k
  lowest-scored anomalies and the k highest-scored inliers of the test set."""
  scores = load_scores(run)
  if f"score_{method}" not in scores:
    raise UserInputError(f"{run['run']} has no scores of method {method!r}")
  s = scores[f"score_{method}"].astype(np.float64)
  is_anom = scores["is_anomaly"].astype(bool)
  test_sources, source_id, index = test_index(run)
  if len(index) != len(s):
    raise UserInputError(f"{run['run']}: {len(index)} indexed test rows but {len(s)} scores")
  inl, anom = np.flatnonzero(~is_anom), np.flatnonzero(is_anom)
  # Stable sorts with the row as tie-breaker, so that equal scores give a fixed choice.
  inl_sorted = inl[np.lexsort((inl, s[inl]))]
  anom_sorted = anom[np.lexsort((anom, s[anom]))]
  groups = [("inliers, lowest score", inl_sorted[:k]), ("anomalies, lowest score", anom_sorted[:k]),
            ("inliers, highest score", inl_sorted[::-1][:k])]
  out = []
  for caption, rows in groups:
    images = []
    for row in rows:
      detail = test_sources[int(source_id[row])]
      if detail not in opened:
        opened[detail] = open_image_source(detail, data_dir)
      images.append((_as_rgb(opened[detail].load(int(index[row]))[0]), float(s[row])))
    out.append((caption, images))
  return out


def examples_figure(rows: Sequence[Tuple[str, list]], path: str, method: str) -> str:
  """Rows = settings; columns = the groups of `example_images` side by side, score under each image."""
  plt = plotting.pyplot()
  k = max(len(images) for _, groups in rows for _, images in groups)
  cols = 3 * k
  fig, axes = plt.subplots(len(rows), cols, figsize=(1.25 * cols, 1.45 * len(rows) + 0.4), squeeze=False)
  for i, (setting, groups) in enumerate(rows):
    for j, (caption, images) in enumerate(groups):
      for t in range(k):
        ax = axes[i][j * k + t]
        ax.set_xticks([])
        ax.set_yticks([])
        if t < len(images):
          image, score = images[t]
          ax.imshow(image, interpolation="nearest")
          ax.set_xlabel(f"{score:.5g}", fontsize=7)
        else:
          ax.axis("off")
        if i == 0 and t == 0:
          ax.set_title(caption, fontsize=8, loc="left")
    axes[i][0].set_ylabel(setting, fontsize=8)
  fig.suptitle(f"Test images by {method} anomaly score (number under each image)", fontsize=10)
  fig.tight_layout()
  return plotting.save_figure(fig, path)


def write_plots(report: Dict, out: str, *, method: str = "cf", data_dir: Optional[str] = None,
                examples: int = 3) -> Tuple[List[Tuple[str, str]], List[str]]:
  """Writes the PNGs of a `report.build_report` result into `out`; returns ([(title, file)], notes)."""
  files, notes = [], []
  chosen = representative_runs(report["runs"], report["settings"])
  for setting, run in chosen.items():
    try:
      files.append((f"Scores, {setting} ({run['run']})",
                    score_histograms(run, os.path.join(out, f"scores_{_safe(setting)}.png"))))
    except Exception as e:  # a broken run must not stop the report
      notes.append(f"no score histogram for {run['run']}: {type(e).__name__}: {e}")
  rows, opened = [], {}
  for setting, run in (chosen.items() if examples > 0 else ()):   # --examples=0: no image figure
    try:
      rows.append((setting, example_images(run, method, examples, opened, data_dir)))
    except Exception as e:
      notes.append(f"no example images for {run['run']}: {type(e).__name__}: {e}")
  if rows:
    files.append((f"Test images by {method} score (Fig. 5)",
                  examples_figure(rows, os.path.join(out, f"examples_{_safe(method)}.png"), method)))
  return files, notes
