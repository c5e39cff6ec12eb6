"""Reading a sweep's workdirs back: one row per run, tables over seeds, metric curves.

A sweep root holds one workdir per run (`<root>/<run name>`, see
`config_lib.SweepRun`), each with config.json, metrics.jsonl and, once it
finished, results.json. Used by `python -m launch.report` and the results
explorer notebook (colab/results_explorer.ipynb).
"""
import json
import os
import re
from typing import Dict, List, Sequence

import numpy as np

from cnf_jax.errors import UserInputError


def setting_of(run_name: str) -> str:
  """The run name without its seed: runs that differ only in seed share a setting."""
  return re.sub(r"-?seed=\d+", "", run_name).strip("-") or "default"


def load_runs(root: str) -> List[Dict]:
  """One dict per run directory under `root`: name, setting, seed, status, auroc_<method>, results.

  status is 'done' (results.json present), 'running' (metrics but no results yet)
  or 'empty'. Directories without config.json are not runs and are skipped.
  """
  root = os.path.expanduser(root)
  if not os.path.isdir(root):
    raise UserInputError(f"sweep root {root} does not exist; give the --workdir the sweep was launched with")
  rows = []
  for name in sorted(os.listdir(root)):
    path = os.path.join(root, name)
    if not os.path.isfile(os.path.join(path, "config.json")):
      continue
    with open(os.path.join(path, "config.json")) as f:
      config = json.load(f)
    row = {"run": name, "setting": setting_of(name), "seed": config.get("seed"), "task": config.get("task"),
           "workdir": path, "status": "empty"}
    if os.path.isfile(os.path.join(path, "metrics.jsonl")):
      row["status"] = "running"
    results_path = os.path.join(path, "results.json")
    if os.path.isfile(results_path):
      with open(results_path) as f:
        results = json.load(f)
      row["status"] = "done"
      row["results"] = results
      row.update({f"auroc_{m}": v for m, v in results.get("auroc", {}).items()})
    rows.append(row)
  return rows


def load_metrics(workdir: str) -> List[Dict]:
  """The JSON lines of <workdir>/metrics.jsonl (one per logged step and model)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def summarize(rows: Sequence[Dict]) -> Dict[str, Dict[str, Dict[str, float]]]:
  """{setting: {method: {"mean", "std", "n"}}} of the finished runs' AUROCs over seeds.

  A final setting "mean" averages the per-setting means (the last row of Table 1).
  """
  done = [r for r in rows if r["status"] == "done"]
  methods = sorted({k[len("auroc_"):] for r in done for k in r if k.startswith("auroc_")})
  table: Dict[str, Dict[str, Dict[str, float]]] = {}
  for setting in dict.fromkeys(r["setting"] for r in done):
    table[setting] = {}
    for m in methods:
      values = [r[f"auroc_{m}"] for r in done if r["setting"] == setting and f"auroc_{m}" in r]
      if values:
        table[setting][m] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}
  if len(table) > 1:
    table["mean"] = {m: {"mean": float(np.mean([t[m]["mean"] for t in table.values() if m in t])),
                         "std": float("nan"), "n": sum(t[m]["n"] for t in table.values() if m in t)}
                     for m in methods}
  return table


def markdown_table(table: Dict[str, Dict[str, Dict[str, float]]]) -> str:
  """AUROC in percent, mean ± std over seeds (std omitted for one seed)."""
  methods = sorted({m for row in table.values() for m in row})
  lines = ["| setting | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
  for setting, row in table.items():
    cells = []
    for m in methods:
      if m not in row:
        cells.append("")
        continue
      s = row[m]
      cell = f"{100 * s['mean']:.1f}"
      if s["n"] > 1 and np.isfinite(s["std"]):
        cell += f" ± {100 * s['std']:.1f}"
      cells.append(cell)
    lines.append(f"| {setting} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
