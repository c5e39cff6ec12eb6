"""Plots and markdown tables of the ablation studies (paper 5.3, 5.4): AUROC curves and score histograms.

  python -m cnf_jax.report --study=contamination --workdir=/tmp/cnf/contamination   # Fig. 6
  python -m cnf_jax.report --study=narrow --workdir=/tmp/cnf/narrow                 # Fig. 7, 8
  python -m cnf_jax.report --study=eps --workdir=/tmp/cnf/eps_ablation              # eps (A.3)
  python -m cnf_jax.report --study=tabular --workdir=/tmp/cnf/tabular_sweep         # Fig. 9

`--workdir` is the sweep root (`python -m cnf_jax.sweep --config=configs/<study>.py
--workdir=...`): one run per directory with config.json and, once finished,
results.json (and scores.npz for the histograms). Writes <out>/<study>.png and
<out>/<study>.md (default out = the sweep root), plus <study>_hist.png for narrow
(Fig. 8: ratio 0) and tabular (Fig. 9). Mean and standard deviation are over the
seeds of each setting (population std, ddof=0).

What is plotted (per the paper's figures):
  contamination  x = D (fraction of inlier data in the contrastive mixture); AUROC of
                 CF and Flow-ratio against deer and against the other classes (without deer).
  narrow         x = ratio (fraction of Tiny ImageNet, the rest CIFAR-10 horse); AUROC against
                 horse (informed AD, Fig. 7 left) and against the other classes without horse.
  eps            x = the clamp eps; CF AUROC per inlier class; the auto rule as a separate point
                 at the mean eps it chose.
  tabular        AUROC of each method (table) and the histograms of normal test, fraud and
                 column-permuted training rows.
"""
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from cnf_jax.reports import tables
from cnf_jax.errors import UserInputError
from cnf_jax.tasks.oneclass import CIFAR10_CLASSES

STUDIES = ("contamination", "narrow", "eps", "tabular")
METHOD_LABEL = {"cf": "CF", "flow": "Flow", "flow_ratio": "Flow-ratio"}


def load_runs(root: str) -> List[dict]:
  """[{"name", "workdir", "config", "results"}] of the finished runs under `root`."""
  runs = [{"name": r["run"], "workdir": r["workdir"], "config": r["config"], "results": r["results"]}
          for r in tables.load_runs(root) if r["status"] == "done"]
  if not runs:
    raise UserInputError(f"no finished run (a directory with results.json) under {os.path.expanduser(root)}")
  return runs


def _weight(results: dict, source_is_broad: bool) -> float:
  """The mixture weight of Tiny ImageNet (source_is_broad) or of the other (class) source."""
  mix = results.get("contrastive_mixture")
  if not mix:
    raise UserInputError("a run has no contrastive_mixture in results.json; is this a mixture study?")
  for name, weight in zip(mix["sources"], mix["weights"]):
    if ("/" not in name) == source_is_broad:
      return float(weight)
  raise UserInputError(f"mixture {mix['sources']} has no {'broad' if source_is_broad else 'class'} source")


def curves(study: str, runs: Sequence[dict]) -> Tuple[str, Dict[str, Dict[str, Dict[float, List[float]]]]]:
  """(x label, {panel: {line label: {x: [AUROC per seed]}}}) of a curve study."""
  panels: Dict[str, Dict[str, Dict[float, List[float]]]] = {}

  def add(panel, line, x, value):
    panels.setdefault(panel, {}).setdefault(line, {}).setdefault(x, []).append(100 * value)

  for run in runs:
    r, c = run["results"], run["config"]
    if study in ("contamination", "narrow"):
      if study == "contamination":
        x, other = _weight(r, source_is_broad=False), "deer"
        xlabel = "D (fraction of inlier data in the contrastive mixture)"
      else:
        x, other = _weight(r, source_is_broad=True), "horse"
        xlabel = "mixture ratio (fraction of Tiny ImageNet; rest CIFAR-10 horse)"
      for m in r["methods"]:
        add(f"against {other}", METHOD_LABEL.get(m, m), x, r["auroc_by_group"][other][m])
        add(f"against the other classes (without {other})", METHOD_LABEL.get(m, m), x,
            r["auroc_excluding"][other][m])
    elif study == "eps":
      xlabel = "clamp eps"
      cls = c["data"]["inlier_class"]
      line = f"{cls} (auto)" if c["objective"]["eps_auto"] else cls
      add("CF AUROC", line, float(r["eps"]), r["auroc"]["cf"])
    else:
      raise ValueError(study)
  return xlabel, panels


def _stats(values: Sequence[float]) -> str:
  return f"{np.mean(values):.1f} ± {np.std(values):.1f} ({len(values)})"


def curve_table(xlabel: str, panels) -> str:
  """Markdown: one row per x, one column per (panel, line), 'mean ± std (seeds)'."""
  columns = [(p, l) for p, lines in panels.items() for l in lines]
  xs = sorted({x for lines in panels.values() for pts in lines.values() for x in pts})
  head = "| " + xlabel.split(" (")[0] + " | " + " | ".join(f"{l}, {p}" for p, l in columns) + " |"
  rows = [head, "|" + "---|" * (len(columns) + 1)]
  for x in xs:
    cells = [_stats(panels[p][l][x]) if x in panels[p][l] else "" for p, l in columns]
    rows.append(f"| {x:g} | " + " | ".join(cells) + " |")
  return "\n".join(rows)


def _eps_table(runs) -> str:
  """Markdown for the eps study: auto runs get their own rows (their eps differs per seed)."""
  by: Dict[Tuple[str, str], List[Tuple[float, float]]] = {}
  for run in runs:
    c, r = run["config"], run["results"]
    key = (c["data"]["inlier_class"], "auto" if c["objective"]["eps_auto"] else f"{c['objective']['eps']:g}")
    by.setdefault(key, []).append((r["eps"], 100 * r["auroc"]["cf"]))
  order = lambda k: (k[0], k[1] == "auto", float(k[1]) if k[1] != "auto" else 0.0)
  rows = ["| class | eps | eps used (mean) | CF AUROC (mean ± std, seeds) |", "|---|---|---|---|"]
  for key in sorted(by, key=order):
    eps_used, auroc = zip(*by[key])
    rows.append(f"| {key[0]} | {key[1]} | {np.mean(eps_used):.1f} | {_stats(auroc)} |")
  return "\n".join(rows)


def plot_curves(xlabel: str, panels, path: str, title: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
  for ax, (panel, lines) in zip(axes[0], panels.items()):
    for line, points in sorted(lines.items()):
      xs = sorted(points)
      mean = np.array([np.mean(points[x]) for x in xs])
      std = np.array([np.std(points[x]) for x in xs])
      style = dict(marker="s", linestyle="none", markersize=8) if "(auto)" in line else dict(marker="o")
      ax.errorbar(xs, mean, yerr=std, capsize=3, label=line, **style)
    ax.set_title(panel)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("AUROC (%)")
    ax.grid(alpha=0.3)
    ax.legend()
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_histograms(sets: Dict[str, Dict[str, np.ndarray]], path: str, title: str,
                    range_from: Sequence[str] = ()) -> None:
  """One panel per method, one histogram per named set of anomaly scores.

  Scores are clipped to the 0.5-99.5% range of the panel's sets named in
  `range_from` (default all): extreme scores pile up at the edges instead of
  stretching the axis (e.g. the long tail of the contrastive training data). A panel whose
  scores span more than 1e4 (flows extrapolate to log-densities of -1e12 on
  far-out table rows) is drawn on the axis sign(s) log10(1 + |s|).
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 3.6), squeeze=False)
  for ax, (method, named) in zip(axes[0], sets.items()):
    pooled = np.concatenate([v for k, v in named.items() if len(v) and (not range_from or k in range_from)])
    symlog = np.ptp(pooled) > 1e4
    if symlog:
      named = {k: np.sign(v) * np.log10(1 + np.abs(v)) for k, v in named.items()}
      pooled = np.sign(pooled) * np.log10(1 + np.abs(pooled))
    lo, hi = np.percentile(pooled, [0.5, 99.5])
    bins = np.linspace(lo, hi, 50)
    for label, values in named.items():
      ax.hist(np.clip(values, lo, hi), bins=bins, density=True, alpha=0.5, label=f"{label} ({len(values)})")
    ax.set_title(METHOD_LABEL.get(method, method))
    ax.set_xlabel("sign(s) log10(1 + |s|), s = anomaly score" if symlog else "anomaly score")
    ax.legend(fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def histogram_sets(study: str, run: dict) -> Dict[str, Dict[str, np.ndarray]]:
  """{method: {set name: scores}} for Fig. 8 (narrow) or Fig. 9 (tabular) from a run's scores.npz."""
  with np.load(os.path.join(run["workdir"], "scores.npz")) as f:
    s = {k: f[k] for k in f.files}
  out = {}
  for m in run["results"]["methods"]:
    score, anomaly = s[f"score_{m}"], s["is_anomaly"].astype(bool)
    if study == "narrow":
      horse = s["group"] == CIFAR10_CLASSES.index("horse")
      out[m] = {"in-distribution (deer test)": score[~anomaly],
                "contrastive (horse) (train)": s[f"contrastive_score_{m}"],
                "out-of-distribution (other test classes)": score[anomaly & ~horse]}
    else:
      out[m] = {"normal (test)": score[~anomaly], "anomaly (test)": score[anomaly],
                "permuted columns (train)": s[f"contrastive_score_{m}"]}
  return out


def write_report(study: str, root: str, out: Optional[str] = None) -> List[str]:
  """Writes the study's PNG(s) and markdown under `out` (default root); returns the paths written."""
  if study not in STUDIES:
    raise UserInputError(f"--study={study!r} is not one of {', '.join(STUDIES)}")
  runs = load_runs(root)
  out = os.path.expanduser(out or root)
  os.makedirs(out, exist_ok=True)
  written = []
  md = [f"# {study}: {len(runs)} finished runs in {root}", ""]
  if study == "tabular":
    methods = runs[0]["results"]["methods"]
    md += ["| method | AUROC (mean ± std, seeds) |", "|---|---|"]
    md += [f"| {METHOD_LABEL.get(m, m)} | {_stats([100 * r['results']['auroc'][m] for r in runs])} |"
           for m in methods]
    eps = [r["results"]["eps"] for r in runs if "eps" in r["results"]]
    if eps:
      md += ["", f"CF clamp eps (auto): {', '.join(f'{e:.2f}' for e in eps)}"]
  else:
    xlabel, panels = curves(study, runs)
    png = os.path.join(out, f"{study}.png")
    plot_curves(xlabel, panels, png, f"{study}: AUROC, mean ± std over seeds")
    written.append(png)
    md += [_eps_table(runs) if study == "eps" else curve_table(xlabel, panels)]
  if study in ("narrow", "tabular"):
    if study == "narrow":
      candidates = [r for r in runs if _weight(r["results"], source_is_broad=True) == 0]
      title = "Fig. 8: deer inliers, contrastive = CIFAR-10 horse only (ratio 0)"
    else:
      candidates, title = runs, "Fig. 9: tabular scores"
    if candidates:
      run = min(candidates, key=lambda r: r["config"]["seed"])
      png = os.path.join(out, f"{study}_hist.png")
      sets = histogram_sets(study, run)
      test_sets = [k for k in next(iter(sets.values())) if "(train)" not in k]  # the axis spans the test scores
      plot_histograms(sets, png, f"{title} ({run['name']})", test_sets)
      written.append(png)
      md += ["", f"Histograms: {os.path.basename(png)} from run {run['name']}."]
  path = os.path.join(out, f"{study}.md")
  with open(path, "w") as f:
    f.write("\n".join(md) + "\n")
  written.append(path)
  return written
