"""CF's clamp eps on raw 1,280-d Lite0 features, chosen per class by the label-free criterion.

The candidates per class (seed 0), all kept in `runs_raw.jsonl` (this folder): eps = 100, the raw
Table 1's own first CF run (imported once from `../table1/effnet_lite0/runs.jsonl` with --from_table1),
and eps = 500, 1,000, 1,500 (configs/cf_factors.py declares them for all ten classes). The run folders
are gone, so the choice is made from those kept lines, with the same rule as every other choice of the
project (`cnf_jax.evaluation.selection.choose`: highest held-out criterion; no test label).

  # add finished eps runs of a sweep root to runs_raw.jsonl (a line with the same run name is replaced):
  python benchmarks/results/cf_factors/eps_raw.py --collect=~/.cache/cnf_jax/cf_eps_raw
  # the per-class table, the chosen eps per class as a Python dict, and JSON lines:
  python benchmarks/results/cf_factors/eps_raw.py
  # Table 1's seed-0 CF line of each class becomes its chosen-eps run (seeds 1 and 2 ran at that eps):
  python benchmarks/results/cf_factors/eps_raw.py --to_table1
"""
import glob
import json
import os
from typing import Dict, List

import numpy as np
from absl import app, flags

from cnf_jax.evaluation import selection
from cnf_jax.files import atomic_write
from cnf_jax.tasks.oneclass import CIFAR10_CLASSES

FLAGS = flags.FLAGS
HERE = os.path.dirname(os.path.abspath(__file__))
flags.DEFINE_string("runs", os.path.join(HERE, "runs_raw.jsonl"), "The eps runs (one line per run).")
flags.DEFINE_string("table1", os.path.join(HERE, "..", "table1", "effnet_lite0", "runs.jsonl"),
                    "Table 1's runs.jsonl on raw Lite0 (read by --from_table1, rewritten by --to_table1).")
flags.DEFINE_multi_string("collect", [], "A sweep root of configs/cf_factors.py whose finished eps runs go into --runs.")
flags.DEFINE_bool("from_table1", False, "Copy --table1's seed-0 CF lines at eps = 100 into --runs (the eps = 100 "
                  "candidates); lines already in --runs are kept.")
flags.DEFINE_bool("to_table1", False, "Replace --table1's seed-0 CF line of each class by its chosen-eps run.")
FEATURES = "effnet_lite0 raw 1,280-d"
TABLE1_EPS = 100.0                        # the eps of Table 1's first CF runs (chosen on PCA-128)
SEARCHED_EPS = (500.0, 1000.0, 1500.0)   # configs/cf_factors.py's RAW_EPS_FACTORS


def read_lines(path: str) -> List[dict]:
  if not os.path.exists(path):
    raise SystemExit(f"eps_raw.py: {path} not found; give the file with --runs / --table1")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def line_of_run(run_dir: str) -> dict:
  """runs_raw.jsonl's line for one finished run folder (figures in %, as the file has them)."""
  with open(os.path.join(run_dir, "config.json")) as f:
    config = json.load(f)
  with open(os.path.join(run_dir, "results.json")) as f:
    results = json.load(f)
  eps = float(config["objective"]["eps"])
  stopping = results.get("early_stopping", {}).get("models", {}).get("cf", {})
  return {"run": os.path.basename(run_dir), "setting": f"objective.eps={eps}",
          "inlier_class": config["data"]["inlier_class"], "seed": int(config["seed"]),
          "criterion": round(100 * results["selection"]["values"]["cf"], 4),
          **{m: round(100 * results[m]["cf"], 2) for m in ("auroc", "aupr", "fpr95")},
          "best_step": stopping.get("best_step"), "eps": eps, "features": FEATURES}


def collect(path: str, roots: List[str]) -> int:
  by_run = {r["run"]: r for r in read_lines(path)}
  new = [line_of_run(os.path.dirname(p)) for root in roots
         for p in sorted(glob.glob(os.path.join(os.path.expanduser(root), "*", "results.json")))]
  for line in new:
    if line["features"] != FEATURES or line["eps"] not in SEARCHED_EPS:
      raise ValueError(f"{line['run']}: not one of the raw eps runs (setting {line['setting']})")
    by_run[line["run"]] = line
  write_runs(path, list(by_run.values()))
  return len(new)


def write_runs(path: str, lines: List[dict]) -> None:
  with atomic_write(path) as f:
    f.write("".join(json.dumps(r) + "\n" for r in sorted(lines, key=lambda r: r["run"])))


def from_table1(path: str, table1: List[dict]) -> int:
  """Copies Table 1's seed-0 CF lines at eps = 100 into runs_raw.jsonl (in its format, figures in %)."""
  by_run = {r["run"]: r for r in read_lines(path)}
  new = [{"run": f"{r['class']}-seed=0", "setting": "", "inlier_class": r["class"], "seed": 0,
          "criterion": round(100 * r["criterion"], 4),
          **{m: round(100 * r[m], 4) for m in ("auroc", "aupr", "fpr95")},  # full precision: 0.01 % would tie candidates
          "best_step": None, "eps": TABLE1_EPS, "features": FEATURES}
         for r in table1 if r["seed"] == 0 and r["method"] == "cf" and r.get("eps") == TABLE1_EPS]
  added = [r for r in new if r["run"] not in by_run]
  write_runs(path, list(by_run.values()) + added)
  return len(added)


def candidates(runs: List[dict]) -> Dict[str, List[selection.Candidate]]:
  """{class: [eps 100, 500, 1000, 1500 candidates]} for the classes that have all four (seed 0)."""
  out = {}
  for name in CIFAR10_CLASSES:
    found = []
    for eps in (TABLE1_EPS,) + SEARCHED_EPS:
      match = [r for r in runs if r["inlier_class"] == name and r["seed"] == 0 and r["eps"] == eps]
      if match:
        found.append(selection.Candidate(match[0]["run"], f"eps={eps}", match[0]["criterion"] / 100,
                                         match[0]["auroc"] / 100))
    if len(found) == 4:
      out[name] = found
  return out


def to_table1(path: str, runs: List[dict], chosen_eps: Dict[str, float]) -> int:
  """Replaces the seed-0 CF line of each class in Table 1's runs.jsonl by its chosen-eps run (the
  figures as runs_raw.jsonl keeps them: AUROC to 0.01 %); a class that chose eps = 100 keeps its line.
  Returns the lines replaced."""
  table1 = read_lines(path)
  replaced = 0
  for i, r in enumerate(table1):
    if r["seed"] == 0 and r["method"] == "cf" and chosen_eps.get(r["class"], r.get("eps")) != r.get("eps"):
      run = next(x for x in runs if x["inlier_class"] == r["class"] and x["seed"] == 0
                 and x["eps"] == chosen_eps[r["class"]])
      table1[i] = {**r, "sweep": "cf_eps_raw", "criterion": round(run["criterion"] / 100, 6),
                   **{m: round(run[m] / 100, 6) for m in ("auroc", "aupr", "fpr95")}, "eps": run["eps"]}
      replaced += 1
  with atomic_write(path) as f:
    f.write("".join(json.dumps(r) + "\n" for r in table1))
  return replaced


def main(argv):
  del argv
  if FLAGS.collect:
    print(f"# {collect(FLAGS.runs, FLAGS.collect)} runs collected into {FLAGS.runs}")
  if FLAGS.from_table1:
    print(f"# {from_table1(FLAGS.runs, read_lines(FLAGS.table1))} eps = 100 lines copied from {FLAGS.table1}")
  runs = read_lines(FLAGS.runs)
  by_class = candidates(runs)
  print("| class | eps 100 | eps 500 | eps 1,000 | eps 1,500 | chosen | chosen - eps 100 | oracle | rho |")
  print("|---|---|---|---|---|---|---|---|---|")
  rows = []
  for name, cands in by_class.items():
    s = selection.select(name, "cf", cands)
    eps = float(s.chosen.settings.split("=")[1])
    rho = "-" if s.rho is None else f"{s.rho:.2f}"
    cells = " | ".join(f"{c.criterion * 100:.2f} / {c.test_auroc * 100:.2f}" for c in cands)
    gain = (s.chosen.test_auroc - cands[0].test_auroc) * 100
    print(f"| {name} | {cells} | {eps:g} | {gain:+.2f} | {s.oracle.test_auroc * 100:.2f} | {rho} |")
    rows.append({"class": name, "chosen_eps": eps, "chosen_auroc": s.chosen.test_auroc,
                 "eps100_auroc": cands[0].test_auroc, "oracle_auroc": s.oracle.test_auroc, "rho": s.rho})
  chosen_eps = {r["class"]: r["chosen_eps"] for r in rows}
  if rows:
    mean = lambda k: 100 * np.mean([r[k] for r in rows])
    rhos = [r["rho"] for r in rows if r["rho"] is not None]
    print(f"\n{len(rows)} classes: chosen {mean('chosen_auroc'):.2f}, eps 100 {mean('eps100_auroc'):.2f} "
          f"({mean('chosen_auroc') - mean('eps100_auroc'):+.2f}), oracle {mean('oracle_auroc'):.2f}; "
          f"mean rho {np.mean(rhos):.2f} over {len(rhos)} classes")
    print("RAW_CF_EPS =", json.dumps(chosen_eps))
  for r in rows:
    print(json.dumps(r))
  if FLAGS.to_table1:
    replaced = to_table1(FLAGS.table1, runs, chosen_eps)
    print(f"# {replaced} seed-0 CF lines of {FLAGS.table1} are now the chosen-eps runs")


if __name__ == "__main__":
  app.run(main)
