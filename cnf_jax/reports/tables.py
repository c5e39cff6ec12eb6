"""Reading a sweep's workdirs back: one row per run, tables in the paper's shape, metric curves.

A sweep root holds one workdir per run (`<root>/<run name>`, see
`config_lib.SweepRun`), each with config.json, metrics.jsonl and, once it
finished, results.json. Used by the table that ends `python -m cnf_jax.sweep`
(cnf_jax.reports.summary), the results explorer notebook (colab/results_explorer.ipynb),
and the full report:

  python -m cnf_jax.report --workdir=<sweep root> [--out=DIR] [--config=configs/x.py] [--method=cf]

which writes DIR/report.md (default <root>/report) with
  - the AUROC table (%): methods as rows, settings (classes) as columns plus
    their mean, each cell mean ± std over seeds, the best method per column
    and every method within one std of it in bold (the paper's rule);
  - Table 2: rows = inlier class, columns = anomaly class, from
    results["auroc_by_group"], for one method;
  - the dataset-vs-dataset table from results["auroc_extra"];
  - what is missing: runs not finished or never launched, cells with fewer seeds;
and the PNG plots of `cnf_jax.reports.plots` (score histograms, Fig. 5 images).
"""
import json
import os
import re
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from cnf_jax.errors import UserInputError
from cnf_jax.files import atomic_write

# The paper's methods in the order of its tables; other methods follow, sorted.
PAPER_METHODS = ("cf", "flow", "flow_ratio", "oe", "mse", "mse_ratio", "kde", "pca", "knn", "lof", "abod", "mcd")
METHOD_LABELS = {"cf": "CF", "flow": "Flow", "flow_ratio": "Flow-ratio", "oe": "OE", "mse": "MSE",
                 "mse_ratio": "MSE-ratio", "kde": "KDE", "pca": "PCA", "knn": "KNN", "lof": "LOF",
                 "abod": "ABOD", "mcd": "MCD", "pca_recon": "PCA-recon", "kde_cv": "KDE-cv"}
SWEEP_FILE = "sweep.json"  # <root>/sweep.json: the declared run names, written by cnf_jax.sweep.


def order_methods(methods: Iterable[str]) -> List[str]:
  """Known paper methods first in the paper's order, then the others alphabetically."""
  methods = set(methods)
  return [m for m in PAPER_METHODS if m in methods] + sorted(methods - set(PAPER_METHODS))


def method_label(method: str) -> str:
  return METHOD_LABELS.get(method, method)


def setting_of(run_name: str) -> str:
  """The run name without its seed: runs that differ only in seed share a setting."""
  return re.sub(r"-?seed=\d+", "", run_name).strip("-") or "default"


def seed_of(run_name: str) -> Optional[int]:
  m = re.search(r"seed=(\d+)", run_name)
  return int(m.group(1)) if m else None


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
    row = {"run": name, "setting": setting_of(name), "seed": config.get("seed", seed_of(name)),
           "task": config.get("task"), "config": config,
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


MERGED_KEYS = ("auroc", "aupr", "fpr95", "auroc_by_group", "auroc_excluding", "auroc_extra")

# The per-method metrics of results.json, in report order, with their headings; FPR at 95% TPR
# is the only one where lower is better.
METRICS = ("auroc", "aupr", "fpr95")
METRIC_TITLES = {"auroc": "AUROC (%)", "aupr": "AUPR (%), anomalies the positive class",
                 "fpr95": "FPR at 95% TPR (%): inliers flagged when 95% of anomalies are (lower is better)"}
LOWER_IS_BETTER = ("fpr95",)


def _merge_methods(into: Dict, other: Dict, where: str) -> None:
  """Adds other's {method: value} (or {group: {method: value}}) entries to `into`, in place."""
  for key, value in other.items():
    if isinstance(value, dict):
      _merge_methods(into.setdefault(key, {}), value, f"{where}/{key}")
    elif key in into and into[key] != value:
      raise UserInputError(f"{where}: method {key!r} has results in two sweep roots ({into[key]} and {value}); "
                           "give each method's runs in one root only")
    else:
      into[key] = value


def merge_roots(rows: List[Dict], others: Sequence[List[Dict]]) -> List[Dict]:
  """Runs of `rows` with the results of the same-named runs in `others` added (other methods).

  For a table whose methods were run as separate sweeps of the same runs, e.g. the flows on a
  GPU and the classical baselines on a CPU. Runs only in `others` are added as they are.
  """
  by_name = {r["run"]: r for r in rows}
  for other in others:
    for r in other:
      mine = by_name.get(r["run"])
      if mine is None:
        by_name[r["run"]] = r
        rows.append(r)
        continue
      if r["status"] != "done":
        continue
      if mine["status"] != "done":
        mine.update(status="done", results={"methods": []})
      results = mine["results"]
      for key in MERGED_KEYS:
        if key in r["results"]:
          _merge_methods(results.setdefault(key, {}), r["results"][key], f"run {r['run']} {key}")
      results["methods"] = list(dict.fromkeys(list(results.get("methods", [])) + list(r["results"].get("methods", []))))
      mine.update({f"auroc_{m}": v for m, v in results.get("auroc", {}).items()})
  return rows


def load_metrics(workdir: str) -> List[Dict]:
  """The JSON lines of <workdir>/metrics.jsonl (one per logged step and model)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def summarize(rows: Sequence[Dict], metric: str = "auroc") -> Dict[str, Dict[str, Dict[str, float]]]:
  """{setting: {method: {"mean", "std", "n"}}} of the finished runs' `metric` (results.json's
  auroc, aupr or fpr95) over seeds.

  A final setting "mean" averages the per-setting means (the last row of Table 1).
  """
  done = [r for r in rows if r["status"] == "done"]
  by_run = [(r, r["results"].get(metric, {})) for r in done]
  methods = sorted({m for _, values in by_run for m in values})
  table: Dict[str, Dict[str, Dict[str, float]]] = {}
  for setting in dict.fromkeys(r["setting"] for r in done):
    table[setting] = {}
    for m in methods:
      values = [v[m] for r, v in by_run if r["setting"] == setting and m in v]
      if values:
        table[setting][m] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}
    if not table[setting]:
      del table[setting]   # none of its runs recorded `metric`
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


# --- Tables in the paper's shape ---------------------------------------------------------------

# row -> column -> seed -> value (AUROC in [0, 1]).
Values = Dict[str, Dict[str, Dict[int, float]]]


def collect(runs: Sequence[Dict], cells: Callable[[Dict], Iterable[Tuple[str, str, float]]]) -> Values:
  """The values `cells(run)` yields as (row, column, value) for every finished run, keyed by seed."""
  out: Values = {}
  for r in runs:
    if r["status"] == "done":
      for row, col, value in cells(r):
        out.setdefault(row, {}).setdefault(col, {})[r["seed"]] = float(value)
  return out


def metric_cells(metric: str):
  """Table 1 / 3 / 4 / 12 and their AUPR / FPR95 twins: (method, setting, value of `metric`)."""
  def cells(run: Dict):
    for m, v in run["results"].get(metric, {}).items():
      yield m, run["setting"], v
  return cells


auroc_cells = metric_cells("auroc")


def confusion_cells(method: str):
  """Table 2: (setting = inlier class, anomaly class, AUROC of `method` against that class alone)."""
  def cells(run: Dict):
    for group, by_method in run["results"].get("auroc_by_group", {}).items():
      if method in by_method:
        yield run["setting"], group, by_method[method]
  return cells


def extra_cells(run: Dict):
  """Extra test sets (dataset-vs-dataset): (method, set name, AUROC)."""
  for name, by_method in run["results"].get("auroc_extra", {}).items():
    for m, v in by_method.items():
      yield m, name, v


def cell_stats(by_seed: Dict[int, float]) -> Tuple[float, float, int]:
  """(mean, std, n) over seeds; std is the population std (0 for one seed), as in `summarize`."""
  v = np.array(list(by_seed.values()), np.float64)
  return float(v.mean()), float(v.std()), len(v)


def row_mean(cells: Dict[str, Dict[int, float]], columns: Sequence[str]) -> Optional[Dict]:
  """The mean column of one row: mean of the column means; std over the seeds that have every column.

  Returns {"mean", "std" (nan if fewer than two complete seeds), "n" (complete seeds),
  "columns" (how many columns have values)} or None if the row is empty.
  """
  present = [c for c in columns if cells.get(c)]
  if not present:
    return None
  mean = float(np.mean([cell_stats(cells[c])[0] for c in present]))
  seeds = set.intersection(*(set(cells[c]) for c in present)) if len(present) == len(columns) else set()
  per_seed = [np.mean([cells[c][s] for c in columns]) for s in sorted(seeds)]
  std = float(np.std(per_seed)) if len(per_seed) > 1 else float("nan")
  return {"mean": mean, "std": std, "n": len(per_seed), "columns": len(present)}


def _format(mean: float, std: float, n: int, expected: int = 0) -> str:
  text = f"{100 * mean:.1f}"
  if n > 1 and np.isfinite(std):
    text += f" ± {100 * std:.1f}"
  if expected and n < expected:
    text += f" ({n}/{expected})"
  return text


def _best_rows(stats: Dict[str, Tuple[float, float, int]], lower_is_better: bool = False) -> List[str]:
  """Rows within one std of the best mean (the best's std), the paper's highlighting rule."""
  if not stats:
    return []
  sign = -1.0 if lower_is_better else 1.0
  best = max(stats, key=lambda r: sign * stats[r][0])
  mean, std, _ = stats[best]
  margin = (std if np.isfinite(std) else 0.0) + 1e-12
  return [r for r, (m, _, _) in stats.items() if sign * (m - mean) >= -margin]


def render_table(values: Values, rows: Sequence[str], columns: Sequence[str], *, row_header: str,
                 row_label: Callable[[str], str] = str, mark: str = "best",
                 expected: Optional[Dict[str, int]] = None, mean_column: bool = True,
                 lower_is_better: bool = False) -> str:
  """Markdown: one line per row, one column per column plus "mean"; values in %.

  mark='best' bolds, per column, the best row (the lowest with lower_is_better) and those
  within one std of it;
  mark='hard' bolds cells below 90 (Table 2's hard pairs). `expected[column]`
  seeds: a cell with fewer shows (n/expected). Empty cells are '–'.
  """
  expected = expected or {}
  header = [row_header, *columns] + (["mean"] if mean_column else [])
  text: Dict[Tuple[str, str], str] = {}
  stats_by_col: Dict[str, Dict[str, Tuple[float, float, int]]] = {}
  mean_columns: Dict[str, int] = {}
  for r in rows:
    cells = values.get(r, {})
    for c in columns:
      if cells.get(c):
        st = cell_stats(cells[c])
        stats_by_col.setdefault(c, {})[r] = st
        text[r, c] = _format(*st, expected.get(c, 0))
    if mean_column:
      # A row's own column (Table 2's diagonal: a class against itself) is not part of its mean.
      own = [c for c in columns if c != r]
      mean = row_mean(cells, own)
      if mean is not None:
        stats_by_col.setdefault("mean", {})[r] = (mean["mean"], mean["std"], mean["n"])
        mean_columns[r] = mean["columns"]
        text[r, "mean"] = _format(mean["mean"], mean["std"], mean["n"]) + ("*" if mean["columns"] < len(own) else "")
  for c, stats in stats_by_col.items():
    if mark == "hard" and c == "mean":
      continue
    if c == "mean":  # means over fewer columns are not comparable: only the most complete rows compete
      stats = {r: st for r, st in stats.items() if mean_columns[r] == max(mean_columns.values())}
    bold = _best_rows(stats, lower_is_better) if mark == "best" else [r for r, s in stats.items() if s[0] < 0.9]
    for r in bold:
      text[r, c] = f"**{text[r, c]}**"
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in rows:
    lines.append("| " + " | ".join([row_label(r)] + [text.get((r, c), "–") for c in header[1:]]) + " |")
  return "\n".join(lines)


def _ordered(first: Sequence[str], seen: Iterable[str]) -> List[str]:
  """`first` (those present in `seen`, plus declared ones) then the rest of `seen` in first-seen order."""
  seen = list(dict.fromkeys(seen))
  return list(dict.fromkeys(list(first) + seen))


# --- Missing runs and cells --------------------------------------------------------------------

def declared_run_names(root: str, config_path: Optional[str] = None, arg: str = "") -> Optional[List[str]]:
  """Run names of the sweep declaration: from `config_path`'s sweep(add), else <root>/sweep.json, else None."""
  from cnf_jax.experiments import config_lib
  if config_path:
    return [r.name for r in config_lib.declared_sweep(config_lib.load_config_module(config_path), config_path)]
  path = os.path.join(os.path.expanduser(root), SWEEP_FILE)
  if os.path.isfile(path):
    with open(path) as f:
      return list(json.load(f).get("runs", []))
  return None


def expected_seeds(runs: Sequence[Dict], declared: Optional[Sequence[str]]) -> Dict[str, int]:
  """Seeds per setting: of every run directory found and every declared run."""
  seeds: Dict[str, set] = {}
  for r in runs:
    seeds.setdefault(r["setting"], set()).add(r["run"] if r["seed"] is None else r["seed"])
  for name in declared or ():
    s = seed_of(name)
    seeds.setdefault(setting_of(name), set()).add(name if s is None else s)
  return {k: len(v) for k, v in seeds.items()}


def missing(root: str, runs: Sequence[Dict], declared: Optional[Sequence[str]], values: Values,
            methods: Sequence[str], settings: Sequence[str], expected: Dict[str, int]) -> List[str]:
  """One line per run without results and per AUROC cell with fewer seeds than expected."""
  out = []
  found = {r["run"] for r in runs}
  for name in declared or ():
    if name not in found:
      there = os.path.isdir(os.path.join(os.path.expanduser(root), name))
      out.append(f"run {name}: {'not started (no config.json yet)' if there else 'never launched'}")
  for r in runs:
    if r["status"] == "running":
      out.append(f"run {r['run']}: running or interrupted (metrics.jsonl, no results.json)")
    elif r["status"] == "empty":
      out.append(f"run {r['run']}: not started (config.json only)")
  for m in methods:
    for s in settings:
      n = len(values.get(m, {}).get(s, {}))
      if n < expected.get(s, 0):
        out.append(f"cell {method_label(m)} / {s}: {n} of {expected[s]} seeds")
  return out


# --- The report --------------------------------------------------------------------------------

def build_report(root: str, *, declared: Optional[Sequence[str]] = None, method: str = "cf",
                 also: Sequence[str] = ()) -> Dict:
  """Every table of the report as markdown plus what the plots need; no files are written.

  also: further sweep roots holding the same runs with other methods (see `merge_roots`).
  Returns {"runs", "methods", "settings", "auroc" (Values), "metrics": {metric: Values} (auroc,
  and aupr / fpr95 where the runs have them), "markdown": {section: text}, "missing": [lines],
  "confusion_method"}.
  """
  runs = merge_roots(load_runs(root), [load_runs(a) for a in also])
  done = [r for r in runs if r["status"] == "done"]
  values = collect(runs, auroc_cells)
  methods = order_methods(values)
  settings = _ordered([setting_of(n) for n in declared or ()] if declared else [],
                      [r["setting"] for r in runs])
  expected = expected_seeds(runs, declared)
  md: Dict[str, str] = {}
  by_metric = {"auroc": values}
  if methods:
    md["auroc"] = render_table(values, methods, settings, row_header="method", row_label=method_label,
                               expected=expected)
    for metric in METRICS[1:]:   # runs written before AUPR / FPR95 were recorded have none
      other = collect(runs, metric_cells(metric))
      if other:
        by_metric[metric] = other
        md[metric] = render_table(other, order_methods(other), settings, row_header="method",
                                  row_label=method_label, expected=expected,
                                  lower_is_better=metric in LOWER_IS_BETTER)
  by_group = [r for r in done if r["results"].get("auroc_by_group")]
  confusion_method = method
  if by_group:
    available = order_methods({m for r in by_group for g in r["results"]["auroc_by_group"].values() for m in g})
    confusion_method = method if method in available else available[0]
    conf = collect(by_group, confusion_cells(confusion_method))
    rows = [s for s in settings if s in conf]
    # Columns in the dataset's class order (results["group_names"]), as the paper's Table 2.
    names = [g for r in by_group for g in r["results"].get("group_names", [])]
    columns = _ordered([], names + sorted({g for r in by_group for g in r["results"]["auroc_by_group"]}))
    columns = [c for c in columns if any(c in conf[row] for row in rows)]
    md["confusion"] = render_table(conf, rows, columns, row_header="inlier \\ anomaly", mark="hard")
  extra = collect(done, extra_cells)
  if extra:
    columns = list(dict.fromkeys(c for r in done for c in r["results"].get("auroc_extra", {})))
    md["extra"] = render_table(extra, order_methods(extra), columns, row_header="method", row_label=method_label)
  return {"runs": runs, "methods": methods, "settings": settings, "auroc": values, "metrics": by_metric,
          "markdown": md,
          "missing": missing(root, runs, declared, values, methods, settings, expected),
          "confusion_method": confusion_method}


def report_markdown(root: str, report: Dict, plots: Sequence[Tuple[str, str]] = (),
                    notes: Sequence[str] = ()) -> str:
  """report.md: status line, the tables, the missing list, the plots (title, file) and notes."""
  runs = report["runs"]
  status = {s: sum(r["status"] == s for r in runs) for s in ("done", "running", "empty")}
  never = sum(line.endswith("never launched") for line in report["missing"])
  lines = [f"# Report: {root}", "",
           f"{len(runs)} run directories: {status['done']} done, {status['running']} running or interrupted, "
           f"{status['empty']} not started" + (f"; {never} declared runs never launched" if never else "") + ".",
           "AUROC, AUPR and FPR95 in %, mean ± std over seeds (population std); (n/N): only n of the N seeds have results; "
           "–: no result; *: mean over the columns that have results.", ""]
  md = report["markdown"]
  if "auroc" in md:
    lines += ["## AUROC (%): methods × settings", "",
              "Bold: the best method of the column and every method within one std of it (the paper's rule).",
              "", md["auroc"], ""]
  for metric in METRICS[1:]:
    if metric in md:
      lines += [f"## {METRIC_TITLES[metric]}: methods × settings", "",
                "Bold: the best method of the column and every method within one std of it.", "", md[metric], ""]
  if "confusion" in md:
    lines += [f"## Per anomaly class (Table 2 shape), method {method_label(report['confusion_method'])}", "",
              "Row: the inlier class the model was trained on; column: the anomaly class scored against the "
              "inlier test images alone. Bold: below 90 (the paper's hard pairs).", "", md["confusion"], ""]
  if "extra" in md:
    lines += ["## Extra test sets (auroc_extra: dataset vs dataset)", "", md["extra"], ""]
  if not md:
    lines += ["No finished runs yet.", ""]
  lines += ["## Missing", ""] + ([f"- {m}" for m in report["missing"]] or ["Nothing: every run and cell has results."])
  lines.append("")
  if plots:
    lines += ["## Plots", ""]
    for title, file in plots:
      lines += [f"### {title}", "", f"![{title}]({file})", ""]
  if notes:
    lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
  return "\n".join(lines)


def write_report(root: str, out: Optional[str] = None, *, config_path: Optional[str] = None, method: str = "cf",
                 plots: bool = True, data_dir: Optional[str] = None, examples: int = 3,
                 also: Sequence[str] = ()) -> str:
  """Writes <out>/report.md (default <root>/report) and its PNGs; returns the report.md path."""
  root = os.path.expanduser(root)
  out = os.path.expanduser(out or os.path.join(root, "report"))
  declared = declared_run_names(root, config_path)
  report = build_report(root, declared=declared, method=method, also=also)
  os.makedirs(out, exist_ok=True)
  files, notes = [], []
  if plots:
    from cnf_jax.reports import plots as report_plots  # matplotlib only when plotting
    files, notes = report_plots.write_plots(report, out, method=report["confusion_method"], data_dir=data_dir,
                                            examples=examples)
  path = os.path.join(out, "report.md")
  with atomic_write(path) as f:
    f.write(report_markdown(root, report, files, notes))
  return path
