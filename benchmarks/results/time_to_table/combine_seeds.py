"""Three-seed comparison of the fast schedule with the fixed 3,000 steps, from two sessions' runs.

Seed 0 of both schedules was run on 2026-12-04 and only its per-class AUROC survives
(cpu_cf_column_3000_seed0_vs_fast.jsonl: `auroc` is the 3,000-step run, `reference_auroc` the
fast one); seeds 1 and 2 were run on 2026-12-07 into two sweep roots:

  python benchmarks/results/time_to_table/combine_seeds.py <fixed seeds 1-2 root> <fast seeds 1-2 root>

Prints one JSON line per class (each schedule's mean over the three seeds, fast - fixed, and the
per-seed values) and a summary line (means, largest |difference|, classes outside 0.3 points).
"""
import json
import os
import sys

import numpy as np

from cnf_jax.tasks.oneclass import CIFAR10_CLASSES

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = 0.3


def seed0():
  """{class: (fixed AUROC %, fast AUROC %)} of seed 0."""
  out = {}
  with open(os.path.join(HERE, "cpu_cf_column_3000_seed0_vs_fast.jsonl")) as f:
    for line in f:
      r = json.loads(line)
      if "class" in r:
        out[r["class"]] = (r["auroc"], r["reference_auroc"])
  return out


def auroc(root, name):
  with open(os.path.join(root, name, "results.json")) as f:
    return 100 * json.load(f)["auroc"]["cf"]


def main(fixed_root, fast_root):
  first = seed0()
  diffs, means = [], {"fixed": [], "fast": []}
  for c in CIFAR10_CLASSES:
    fixed = [first[c][0]] + [auroc(fixed_root, f"{c}-seed={s}") for s in (1, 2)]
    fast = [first[c][1]] + [auroc(fast_root, f"{c}-seed={s}") for s in (1, 2)]
    diff = np.mean(fast) - np.mean(fixed)
    diffs.append(diff)
    means["fixed"].append(np.mean(fixed))
    means["fast"].append(np.mean(fast))
    print(json.dumps({"class": c, "fixed_3000": round(float(np.mean(fixed)), 2), "fast": round(float(np.mean(fast)), 2),
                      "diff": round(float(diff), 2), "fixed_per_seed": [round(v, 2) for v in fixed],
                      "fast_per_seed": [round(v, 2) for v in fast]}))
  outside = [c for c, d in zip(CIFAR10_CLASSES, diffs) if abs(d) > TOLERANCE]
  print(json.dumps({"seeds": 3, "mean_fixed_3000": round(float(np.mean(means["fixed"])), 2),
                    "mean_fast": round(float(np.mean(means["fast"])), 2),
                    "max_abs_diff": round(float(np.max(np.abs(diffs))), 2), "tolerance": TOLERANCE,
                    "outside_tolerance": outside}))


if __name__ == "__main__":
  if len(sys.argv) != 3:
    sys.exit(__doc__)
  main(sys.argv[1], sys.argv[2])
