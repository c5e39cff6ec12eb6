"""ADBench on the shared data: the detector's methods against classical and PyOD baselines.

  python benchmarks/adbench.py --out=benchmarks/results/adbench/runs.jsonl \
      [--protocols=semi,unsup] [--seeds=0,1,2] [--methods=cf,flow,flow_ratio,knn5,...] \
      [--sets=<comma list or 'dev' / 'holdout' / 'all'>] [--config=default] [--detector='{"noise_std": 0.1}']
  python benchmarks/adbench.py --summarize --out=benchmarks/results/adbench/runs.jsonl

Data: ADBench's own .npz files (`X` [N, D], `y` [N], 1 = anomaly) under --data_root
(`classical/` tables, `cv_resnet18/` image embeddings). A set of more than --max_rows rows
is first subsampled to --max_rows random rows (the seed picks them; stratified by y), so that
a run fits on two CPU cores.

Protocols (each seed splits afresh):
  semi    fit on a random half of the normal rows; test on the other half plus every anomaly.
  unsup   ADBench's unsupervised setting: a stratified 70/30 split; fit on the 70% with its
          anomalies (labels unused), test on the 30%.

Methods:
  cf, flow, flow_ratio   ContrastiveFlowDetector(method=..., random_state=seed, **--detector);
                         cf and flow_ratio contrast against permuted columns (paper 5.4).
  knn5                   the 5-nearest-neighbour baseline: mean distance to the 5 nearest
                         training rows in standardised columns.
  kde, pca, knn, lof, abod, mcd, pyod:<Name>
                         cnf_jax.evaluation.baselines with PyOD's defaults, on standardised
                         columns (mean and std of the training rows; constant columns get std 1).
  kde_cv                 kde with its bandwidth chosen by likelihood cross-validation on the
                         training rows, as the detector chooses its noise (record: bandwidth).

Every (set, protocol, seed, method, config) is one JSON line in --out, appended as soon as it
is measured: a rerun skips what is there, so an interrupted benchmark resumes. A method that
raises or gives a non-finite score is recorded with `error` (and counts as a failure in the
summary), never skipped silently. --summarize writes results.md and adbench.png next to --out
(or into --report_dir).
"""
import glob
import json
import math
import os
import sys
import time
import traceback

from absl import app
from absl import flags

import numpy as np

FLAGS = flags.FLAGS
flags.DEFINE_string("data_root", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "adbench"),
                    "folder with classical/*.npz and cv_resnet18/*.npz")
flags.DEFINE_string("out", "benchmarks/results/adbench/runs.jsonl", "JSON lines, one per measurement (appended)")
flags.DEFINE_list("protocols", ["semi", "unsup"], "semi and/or unsup")
flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds (each splits and initialises afresh)")
flags.DEFINE_list("methods", ["cf", "flow", "flow_ratio", "knn5"], "methods to run")
flags.DEFINE_string("sets", "all", "'all', 'dev', 'holdout' or a comma list of set names (file stems)")
flags.DEFINE_string("config", "default", "a name for the detector settings of this run (part of each key)")
flags.DEFINE_string("detector", "{}", "JSON of ContrastiveFlowDetector arguments for this config")
flags.DEFINE_integer("max_rows", 10000, "subsample larger sets to this many rows (stratified)")
flags.DEFINE_float("minutes", 0, "stop starting new measurements after this many minutes (0: no limit)")
flags.DEFINE_bool("summarize", False, "write results.md and adbench.png from --out instead of running")
flags.DEFINE_string("summary_config", "default", "with --summarize: the detector config to tabulate, or a comma "
                    "list: the others' methods are shown as '<method>@<config>'")
flags.DEFINE_string("report_dir", "", "with --summarize: the folder for results.md and adbench.png (default: --out's)")
flags.DEFINE_list("selection", [], "with --summarize: files of JSON lines of candidate settings (--sets=dev runs), "
                  "each tabulated as one stage of the choice of the defaults")
flags.DEFINE_string("select_method", "cf", "with --selection: the method whose mean AUROC chooses the setting")

FLOW_METHODS = ("cf", "flow", "flow_ratio")
PROTOCOLS = ("semi", "unsup")


# ---- data ------------------------------------------------------------------------------------

def set_paths(root: str) -> dict:
  """{set name: path} of every .npz under root/*/, sorted by name."""
  paths = sorted(glob.glob(os.path.join(root, "*", "*.npz")))
  if not paths:
    raise SystemExit(f"error: no ADBench .npz files under {root}/*/ (see ../shared/data/README.md)")
  return {os.path.splitext(os.path.basename(p))[0]: p for p in paths}


def dev_holdout(names) -> tuple:
  """The sets the defaults are chosen on (every second name in sorted order) and the rest."""
  names = sorted(names)
  return names[0::2], names[1::2]


def select_sets(spec: str, names) -> list:
  dev, holdout = dev_holdout(names)
  if spec in ("all", "dev", "holdout"):
    return {"all": sorted(names), "dev": dev, "holdout": holdout}[spec]
  chosen = [s.strip() for s in spec.split(",") if s.strip()]
  unknown = sorted(set(chosen) - set(names))
  if unknown:
    raise SystemExit(f"error: unknown set(s) {unknown}; known: {', '.join(sorted(names))}")
  return chosen


def stratified_pick(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
  """Sorted indices of a random `fraction` of each class of y [N] (at least one row per class)."""
  picked = []
  for label in np.unique(y):
    rows = np.flatnonzero(y == label)
    picked.append(rng.choice(rows, max(1, int(round(fraction * len(rows)))), replace=False))
  return np.sort(np.concatenate(picked))


def split(x: np.ndarray, y: np.ndarray, protocol: str, seed: int, max_rows: int):
  """(train [n, D], test [m, D], test labels [m]) of one set under a protocol and seed."""
  rng = np.random.default_rng([seed, 16])
  if len(y) > max_rows:
    keep = stratified_pick(y, max_rows / len(y), rng)
    x, y = x[keep], y[keep]
  if protocol == "semi":
    normal = rng.permutation(np.flatnonzero(y == 0))
    train = np.sort(normal[: len(normal) // 2])
    test = np.sort(np.concatenate([normal[len(normal) // 2:], np.flatnonzero(y == 1)]))
  else:
    train = stratified_pick(y, 0.7, rng)
    test = np.setdiff1d(np.arange(len(y)), train)
  return x[train], x[test], y[test]


# ---- methods ---------------------------------------------------------------------------------

def standardizer(train: np.ndarray):
  mean, std = train.mean(axis=0), train.std(axis=0)
  std = np.where(std > 0, std, 1.0)
  return lambda v: (v - mean) / std


def run_method(method: str, train: np.ndarray, test: np.ndarray, seed: int, detector_args: dict):
  """(test scores [m], fit seconds, score seconds, {record key: the setting the method chose});
  higher score = more anomalous. Chosen settings: the detector's training noise (noise_std) and
  the dtype of its products (compute_dtype: 'auto' depends on the CPU), kde_cv's bandwidth
  (bandwidth)."""
  start, chosen = time.perf_counter(), {}
  if method in FLOW_METHODS:
    import cnf_jax
    det = cnf_jax.ContrastiveFlowDetector(method=method, random_state=seed, **detector_args).fit(train)
    fitted = time.perf_counter()
    scores = det.decision_function(test)
    chosen = {"noise_std": float(det.noise_std_), "compute_dtype": det.compute_dtype_}
  else:
    from cnf_jax.evaluation import baselines
    scale = standardizer(train)
    cfg = baselines.default_config()
    name = method
    if method == "knn5":
      name, cfg.knn_k, cfg.knn_method = "knn", 5, "mean"
    score_fn = baselines.fit(name, scale(train), None, cfg, seed)
    fitted = time.perf_counter()
    scores = score_fn(scale(test))
    if hasattr(score_fn, "bandwidth"):
      chosen = {"bandwidth": float(score_fn.bandwidth)}
  return np.asarray(scores, np.float64), fitted - start, time.perf_counter() - fitted, chosen


def measure(set_name, family, x, y, protocol, seed, method, config, detector_args, max_rows) -> dict:
  from cnf_jax.evaluation import metrics
  train, test, labels = split(x, y, protocol, seed, max_rows)
  record = {"set": set_name, "family": family, "protocol": protocol, "seed": seed, "method": method,
            "config": config, "n_train": len(train), "n_test": len(test), "dim": x.shape[1],
            "test_anomalies": int(labels.sum())}
  try:
    scores, fit_s, score_s, chosen = run_method(method, train, test, seed, detector_args)
    record.update(fit_s=round(fit_s, 3), score_s=round(score_s, 3))
    record.update(chosen)   # e.g. the training noise the detector used (chosen, with 'auto')
    if not np.all(np.isfinite(scores)):
      record["error"] = f"{int((~np.isfinite(scores)).sum())} non-finite scores"
    else:
      record.update(auroc=float(metrics.auroc(scores, labels)), aupr=float(metrics.aupr(scores, labels)))
  except Exception as e:  # a benchmark records failures instead of stopping at the first one
    record["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    traceback.print_exc(file=sys.stderr)
  return record


def key(r: dict) -> tuple:
  return (r["set"], r["protocol"], int(r["seed"]), r["method"], r["config"])


def read_records(path: str) -> list:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def run(paths: dict) -> None:
  done = {key(r) for r in read_records(FLAGS.out)}
  detector_args = json.loads(FLAGS.detector)
  names = select_sets(FLAGS.sets, paths)
  deadline = time.time() + 60 * FLAGS.minutes if FLAGS.minutes else math.inf
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  for protocol in FLAGS.protocols:
    if protocol not in PROTOCOLS:
      raise SystemExit(f"error: --protocols: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
  todo = [(s, p, int(seed), m) for s in names for p in FLAGS.protocols for seed in FLAGS.seeds
          for m in FLAGS.methods if (s, p, int(seed), m, FLAGS.config) not in done]
  print(json.dumps({"todo": len(todo), "done_before": len(done), "sets": len(names)}), flush=True)
  loaded = {}
  for set_name, protocol, seed, method in todo:
    if time.time() > deadline:
      print(json.dumps({"stopped": "time budget", "left": "rerun the same command to go on"}), flush=True)
      return
    if set_name not in loaded:
      with np.load(paths[set_name]) as f:
        loaded = {set_name: (np.asarray(f["X"], np.float64), np.asarray(f["y"]).astype(int))}
    x, y = loaded[set_name]
    family = os.path.basename(os.path.dirname(paths[set_name]))
    record = measure(set_name, family, x, y, protocol, seed, method, FLAGS.config, detector_args, FLAGS.max_rows)
    with open(FLAGS.out, "a") as f:
      f.write(json.dumps(record) + "\n")
    print(json.dumps(record), flush=True)


# ---- summary ---------------------------------------------------------------------------------

def is_flow(method: str) -> bool:
  return method.split("@")[0] in FLOW_METHODS


def tabulated(records: list, config: str) -> list:
  """The records a summary compares: every baseline's, the detector methods' of the first
  config of the comma list `config`, and those of the others as methods named
  '<method>@<config>' (e.g. 'cf@scaled': the detector's earlier default beside the new one)."""
  first, *others = config.split(",")
  rows = []
  for r in records:
    if r["method"] not in FLOW_METHODS or r["config"] == first:
      rows.append(r)
    elif r["config"] in others:
      rows.append({**r, "method": f"{r['method']}@{r['config']}"})
  return rows


def summarize(records: list, config: str, out_dir: str, all_sets) -> str:
  """Markdown: per protocol, AUROC and AUPR per set and method (mean over the seeds that every
  method has on that set), their means over all sets, the dev and the holdout sets (of
  all_sets, the names of every set), mean rank, failures and median time. config: the
  detector config to tabulate, or a comma list (the others' methods as '<method>@<config>')."""
  import collections
  rows = tabulated(records, config)
  dev, _ = dev_holdout(all_sets)
  lines = [f"# ADBench on the shared data (detector config `{config.split(',')[0]}`)", ""]
  figures = {}
  for protocol in PROTOCOLS:
    by_seed, fails, times, seeds = (collections.defaultdict(dict), collections.Counter(),
                                    collections.defaultdict(list), set())
    for r in rows:
      if r["protocol"] != protocol:
        continue
      seeds.add(r["seed"])
      if "error" in r:
        fails[r["method"]] += 1
        continue
      by_seed[(r["set"], r["method"])][r["seed"]] = (r["auroc"], r["aupr"])
      times[r["method"]].append(r["fit_s"] + r["score_s"])
    if not by_seed:
      continue
    methods = sorted({m for _, m in by_seed} | set(fails), key=lambda m: (not is_flow(m), "@" in m, m))
    # Means and ranks over the sets every ranked method finished. A method that failed on any
    # set is not ranked (else its failures would drop those sets for every method); its
    # per-set values and its failure count are still shown.
    ranked = [m for m in methods if not fails[m]]
    sets = sorted({s for s, _ in by_seed})
    # Per set, the seeds that every method with a result there has: when some methods have run
    # more seeds than others, all are compared on the same splits.
    shared_seeds = {s: set.intersection(*[set(v) for (s2, _), v in by_seed.items() if s2 == s]) for s in sets}
    seed_counts = collections.Counter(len(shared_seeds[s]) for s in sets)
    cell = {(s, m): [v[seed] for seed in sorted(shared_seeds[s])] for (s, m), v in by_seed.items()
            if shared_seeds[s]}
    complete = [s for s in sets if all((s, m) in cell for m in ranked)]
    mean = {k: np.mean(v, axis=0) for k, v in cell.items()}
    ranks = {m: [] for m in ranked}
    for s in complete:
      values = np.array([mean[(s, m)][0] for m in ranked])
      for m, rank in zip(ranked, _ranks(values)):
        ranks[m].append(rank)

    def average(m, metric, names):
      names = [s for s in complete if s in names and (s, m) in mean]
      return float(np.mean([mean[(s, m)][metric] for s in names])) if names else float("nan")

    summary = {m: {"auroc": average(m, 0, complete), "aupr": average(m, 1, complete),
                   "auroc_dev": average(m, 0, dev), "auroc_holdout": average(m, 0, set(complete) - set(dev)),
                   "rank": float(np.mean(ranks[m])) if m in ranks and complete else float("nan"),
                   "failures": int(fails[m]),
                   "seconds": float(np.median(times[m])) if times[m] else float("nan")} for m in methods}
    unranked = [m for m in methods if m not in ranked]
    lines += [f"## Protocol `{protocol}`", "",
              f"Seeds {sorted(seeds)} ("
              + ", ".join(f"{count} on {n} sets" for count, n in sorted(seed_counts.items(), reverse=True))
              + ": per set, the seeds every method has); "
              f"means and ranks over the {len(complete)} sets every ranked method finished "
              f"({len(sets)} with any result)"
              + (f"; not ranked, as they failed on some sets: {', '.join(unranked)} (their means are over "
                 "those sets where they ran)" if unranked else "")
              + ". x 100, mean over seeds; the best per row in bold; dev = the sets the defaults were chosen on;"
              " - = failed or not run.", ""]
    header = ["| set | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for metric, label in ((0, "AUROC"), (1, "AUPR")):
      lines += [f"### {label}", ""] + header
      for s in sets:
        values = [mean[(s, m)][metric] if (s, m) in mean else None for m in methods]
        best = max(v for v in values if v is not None)
        lines.append(f"| {s}{' (dev)' if s in dev else ''} | " + " | ".join(
            "-" if v is None else (f"**{100 * v:.1f}**" if v == best else f"{100 * v:.1f}") for v in values) + " |")
      key_name = ("auroc", "aupr")[metric]
      lines.append(f"| **mean {label}** | " + " | ".join(f"{100 * summary[m][key_name]:.1f}" for m in methods) + " |")
      if metric == 0:
        for part in ("dev", "holdout"):
          lines.append(f"| mean AUROC, {part} sets | " + " | ".join(
              f"{100 * summary[m]['auroc_' + part]:.1f}" for m in methods) + " |")
        lines.append("| **mean rank** (AUROC) | " + " | ".join(
            "-" if math.isnan(summary[m]["rank"]) else f"{summary[m]['rank']:.2f}" for m in methods) + " |")
        lines.append("| failures (raised / non-finite) | " + " | ".join(
            str(summary[m]["failures"]) for m in methods) + " |")
        lines.append("| median fit + score s | " + " | ".join(f"{summary[m]['seconds']:.1f}" for m in methods) + " |")
      lines.append("")
    figures[protocol] = summary
  if figures:
    _plot(figures, os.path.join(out_dir, "adbench.png"))
    lines += ["![mean rank and AUROC per method](adbench.png)", ""]
  return "\n".join(lines)


def selection_table(records: list, method: str) -> str:
  """Markdown: mean AUROC of `method` per candidate config over the sets where it finished, and
  over the sets every candidate finished (the fair comparison); the rule picks the highest."""
  import collections
  auroc = collections.defaultdict(dict)
  for r in records:
    if r["method"] == method and r["protocol"] == "semi" and "auroc" in r:
      auroc[r["config"]].setdefault(r["set"], []).append(r["auroc"])
  configs = sorted(auroc, key=lambda c: -np.mean([np.mean(v) for v in auroc[c].values()]))
  common = set.intersection(*(set(auroc[c]) for c in configs)) if configs else set()
  complete = max((len(v) for v in auroc.values()), default=0)
  lines = [f"| config | sets | mean AUROC of {method} | on the {len(common)} sets every config finished |",
           "|---|---|---|---|"]
  for c in sorted(configs, key=lambda c: -np.mean([np.mean(auroc[c][s]) for s in common]) if common else 0):
    mean_all = 100 * np.mean([np.mean(v) for v in auroc[c].values()])
    mean_common = 100 * np.mean([np.mean(auroc[c][s]) for s in common]) if common else float("nan")
    partial = "" if len(auroc[c]) == complete else " (stopped early)"
    lines.append(f"| {c}{partial} | {len(auroc[c])} | {mean_all:.2f} | {mean_common:.2f} |")
  return "\n".join(lines)


def selection_sections(paths: list, method: str) -> str:
  """Markdown: one selection_table per file in `paths` (one stage of the choice each), headed by
  the file's name; '' for no paths."""
  return "".join(f"\n## The choice of the defaults: `{os.path.basename(path)}` (protocol semi, seed 0, dev sets)\n\n"
                 + selection_table(read_records(path), method) + "\n" for path in paths)


def _ranks(values: np.ndarray) -> np.ndarray:
  """Ranks [K] of values [K], 1 = highest; ties share their mean rank."""
  from scipy.stats import rankdata
  return rankdata(-np.asarray(values), method="average")


def _plot(figures: dict, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(figures), figsize=(6 * len(figures), 4), squeeze=False)
  for ax, (protocol, summary) in zip(axes[0], figures.items()):
    methods = sorted((m for m in summary if not math.isnan(summary[m]["rank"])), key=lambda m: summary[m]["rank"])
    ax.barh(range(len(methods)), [summary[m]["rank"] for m in methods],
            color=["tab:red" if is_flow(m) else "tab:gray" for m in methods])
    ax.set_yticks(range(len(methods)), [f"{m} ({100 * summary[m]['auroc']:.1f})" for m in methods])
    ax.invert_yaxis()
    ax.set_xlabel("mean rank over sets (lower is better); label: mean AUROC")
    ax.set_title(f"ADBench, protocol {protocol}")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv):
  del argv
  if FLAGS.summarize:
    # read_records treats a missing --out as "nothing measured yet" (a fresh run); a missing
    # --selection file is a typo, which would otherwise print an empty table.
    missing = [path for path in FLAGS.selection if not os.path.isfile(path)]
    if missing:
      raise app.UsageError(f"--selection: no such file {', '.join(missing)}; give the JSON lines that "
                           "--sets=dev runs of the candidate settings wrote")
    out_dir = FLAGS.report_dir or os.path.dirname(os.path.abspath(FLAGS.out))
    os.makedirs(out_dir, exist_ok=True)
    records = read_records(FLAGS.out)
    # dev / holdout are halves of all the sets on disk (or, without the data, of those measured).
    names = set_paths(FLAGS.data_root) if glob.glob(os.path.join(FLAGS.data_root, "*", "*.npz")) else {}
    text = summarize(records, FLAGS.summary_config, out_dir, names or {r["set"] for r in records})
    text += selection_sections(FLAGS.selection, FLAGS.select_method)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
      f.write(text + "\n")
    print(text)
    return
  from cnf_jax.training import host_memory
  host_memory.configure("default")   # what a user of the detector gets (CNF_JAX_HOST_MALLOC overrides)
  run(set_paths(FLAGS.data_root))


if __name__ == "__main__":
  app.run(main)
