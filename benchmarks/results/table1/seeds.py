"""Table 1 over several seeds from a feature set's runs.jsonl (one line per class, seed and method).

The sweep roots of one seed can be gone (a reset machine loses ~/.cache) while their figures are
kept in runs.jsonl, so the table over seeds is built from that file, not from the run folders.

  # add the finished runs of sweep roots to runs.jsonl (a line already there is replaced):
  python benchmarks/results/table1/seeds.py --runs=<dir>/runs.jsonl --collect=<W>/flows --collect=<W>/baselines
  # print the markdown tables: mean over each method's complete seeds per class, mean per seed, CF - X,
  # and the class-seed cells where CF is not first:
  python benchmarks/results/table1/seeds.py --runs=<dir>/runs.jsonl
"""
import glob
import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
from absl import app, flags

from cnf_jax.files import atomic_write
from cnf_jax.reports.tables import METHOD_LABELS
from cnf_jax.tasks.oneclass import CIFAR10_CLASSES as CLASSES
FLAGS = flags.FLAGS
flags.DEFINE_string("runs", None, "The runs.jsonl to read (and, with --collect, to update).", required=True)
flags.DEFINE_multi_string("collect", [], "A sweep root whose finished runs (results.json) go into --runs.")

Key = Tuple[str, int, str]  # (class, seed, method)


def read_lines(path: str) -> List[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def lines_of_root(root: str) -> List[dict]:
  """One line per method of every finished run under the sweep root `root`."""
  out = []
  for results_path in sorted(glob.glob(os.path.join(root, "*", "results.json"))):
    run_dir = os.path.dirname(results_path)
    with open(os.path.join(run_dir, "config.json")) as f:
      config = json.load(f)
    with open(results_path) as f:
      results = json.load(f)
    criterion = results.get("selection", {}).get("values", {})
    for method in results["methods"]:
      out.append({"class": config["data"]["inlier_class"], "seed": int(config["seed"]), "method": method,
                  "sweep": os.path.basename(os.path.normpath(root)),
                  **{m: round(results[m][method], 6) for m in ("auroc", "aupr", "fpr95")},
                  "criterion": round(criterion[method], 6) if method in criterion else None,
                  "feature_dim": results["feature_dim"], "eps": results.get("eps"),
                  **({"baseline_seconds": results["baseline_seconds"][method]}
                     if method in results.get("baseline_seconds", {}) else {})})
  return out


def collect(path: str, roots: Sequence[str]) -> int:
  """Adds the runs of `roots` to the runs.jsonl at `path` (atomically); returns the lines added."""
  by_key: Dict[Key, dict] = {(r["class"], r["seed"], r["method"]): r for r in read_lines(path)}
  new = [r for root in roots for r in lines_of_root(root)]
  by_key.update({(r["class"], r["seed"], r["method"]): r for r in new})
  order = {c: i for i, c in enumerate(CLASSES)}
  rows = sorted(by_key.values(), key=lambda r: (r["seed"], order.get(r["class"], 99), r["class"], r["method"]))
  with atomic_write(path) as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  return len(new)


def tables(rows: List[dict]) -> str:
  """Markdown: AUROC (%) per class averaged over each method's complete seeds (all ten classes),
  the mean per seed ('-' where a method lacks a class in that seed), and CF - X over the seeds
  both methods have complete."""
  auroc = {(r["class"], r["seed"], r["method"]): 100 * r["auroc"] for r in rows}
  methods = [m for m in METHOD_LABELS if any(r["method"] == m for r in rows)]
  seeds = sorted({r["seed"] for r in rows})
  complete = {m: [s for s in seeds if all((c, s, m) in auroc for c in CLASSES)] for m in methods}
  shown = [s for s in seeds if any(s in complete[m] for m in methods)]
  out = ["Each method's mean is over the seeds in which it has all ten classes (column 'seeds').", "",
         "| method | " + " | ".join(CLASSES) + " | mean | seeds | " + " | ".join(f"seed {s}" for s in shown) + " |",
         "|---" * (len(CLASSES) + 3 + len(shown)) + "|"]
  for m in methods:
    if not complete[m]:
      continue
    per_class = [np.mean([auroc[c, s, m] for s in complete[m]]) for c in CLASSES]
    per_seed = [f"{np.mean([auroc[c, s, m] for c in CLASSES]):.2f}" if s in complete[m] else "-" for s in shown]
    out.append(f"| {METHOD_LABELS[m]} | " + " | ".join(f"{v:.2f}" for v in per_class)
               + f" | {np.mean(per_class):.2f} | {len(complete[m])} | " + " | ".join(per_seed) + " |")
  if "cf" in methods:
    out += ["", "| CF - X (class means over the seeds both have) | seeds | mean | CF higher | min | per seed: mean (CF higher) |",
            "|---|---|---|---|---|---|"]
    for m in methods:
      both = [s for s in complete["cf"] if s in complete[m]]
      if m == "cf" or not both:
        continue
      diff = np.array([np.mean([auroc[c, s, "cf"] - auroc[c, s, m] for s in both]) for c in CLASSES])
      per_seed = []
      for s in both:
        d = np.array([auroc[c, s, "cf"] - auroc[c, s, m] for c in CLASSES])
        per_seed.append(f"{d.mean():+.2f} ({(d > 0).sum()}/10)")
      out.append(f"| CF - {METHOD_LABELS[m]} | {len(both)} | {diff.mean():+.2f} | {(diff > 0).sum()} of 10 | "
                 f"{diff.min():+.2f} | " + ", ".join(per_seed) + " |")
    out += ["", first_cells(auroc, methods, complete["cf"])]
  return "\n".join(out)


def first_cells(auroc: Dict[Key, float], methods: List[str], seeds: List[int]) -> str:
  """Which method has the highest AUROC in each (class, seed) cell of CF's complete seeds, among
  the methods that have that cell; for the others, by how much they lead CF."""
  leads = {}
  for s in seeds:
    for c in CLASSES:
      have = [m for m in methods if (c, s, m) in auroc]
      best = max(have, key=lambda m: auroc[c, s, m])
      if best != "cf":
        leads[c, s] = (best, auroc[c, s, best] - auroc[c, s, "cf"])
  n = len(seeds) * len(CLASSES)
  text = f"CF is first on {n - len(leads)} of {n} class-seed cells"
  if leads:
    text += "; elsewhere: " + ", ".join(f"{METHOD_LABELS[m]} on {c} seed {s} (+{d:.2f})"
                                       for (c, s), (m, d) in sorted(leads.items(), key=lambda kv: (kv[0][1], kv[0][0])))
  return text + "."


def main(argv: Sequence[str]) -> None:
  del argv
  if FLAGS.collect:
    for root in FLAGS.collect:
      if not os.path.isdir(root):
        raise app.UsageError(f"--collect={root}: no such sweep root")
    print(f"{collect(FLAGS.runs, FLAGS.collect)} lines from {len(FLAGS.collect)} sweep root(s) -> {FLAGS.runs}")
  else:
    print(tables(read_lines(FLAGS.runs)))


if __name__ == "__main__":
  app.run(main)
