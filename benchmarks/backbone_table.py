"""Issue 14, part 3: which features for the whole table, chosen on the baselines and Flow (not CF)
with the label-free criterion, and what each feature set gives on test data.

  python benchmarks/backbone_table.py effnet_lite0=<sweep root> effnet_lite1=<sweep root> ... \
      [--methods=flow,kde,knn,lof,pca] [--out=benchmarks/results/backbones/table.md]

Each sweep root holds the same one-class runs (configs/oneclass.py) on one feature set. Per
feature set and method it prints the mean over runs of the held-out criterion
(results.json["selection"]: AUROC of held-out Tiny ImageNet rows against held-out inliers; no
test label) and of the test AUROC. The rule: the chosen feature set has the highest criterion
averaged over the listed methods (the baselines and Flow; CF is left out so that the features
are not picked for the method under study). Test AUROC is shown, never used.
"""
import argparse
import glob
import json
import os

import numpy as np


def load(root: str) -> list:
  runs = []
  for path in sorted(glob.glob(os.path.join(os.path.expanduser(root), "*", "results.json"))):
    with open(path) as f:
      runs.append((os.path.basename(os.path.dirname(path)), json.load(f)))
  if not runs:
    raise SystemExit(f"error: no finished run (results.json) under {root}")
  return runs


def table(sets: dict, methods: list) -> str:
  names = {label: sorted(r for r, _ in runs) for label, runs in sets.items()}
  first = next(iter(names.values()))
  if any(n != first for n in names.values()):
    raise SystemExit(f"error: the sweep roots hold different runs: {names}")
  rows, score = [], {}
  for label, runs in sets.items():
    crit = {m: np.mean([r["selection"]["values"][m] for _, r in runs]) for m in methods}
    test = {m: np.mean([r["auroc"][m] for _, r in runs]) for m in methods}
    score[label] = float(np.mean(list(crit.values())))
    rows.append((label, crit, test))
  chosen = max(score, key=score.get)
  head = "| features | " + " | ".join(f"{m} crit. / test" for m in methods) + " | mean crit. | mean test |"
  lines = [f"Runs: {', '.join(first)}. Criterion and test AUROC in %, mean over the runs.", "", head,
           "|" + "---|" * (len(methods) + 3)]
  for label, crit, test in rows:
    cells = [f"{100 * crit[m]:.2f} / {100 * test[m]:.2f}" for m in methods]
    mark = " (chosen)" if label == chosen else ""
    lines.append(f"| {label}{mark} | " + " | ".join(cells) +
                 f" | {100 * score[label]:.2f} | {100 * np.mean(list(test.values())):.2f} |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("sets", nargs="+", help="label=sweep root")
  parser.add_argument("--methods", default="flow,kde,knn,lof,pca")
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  sets = {}
  for item in args.sets:
    label, _, root = item.partition("=")
    sets[label] = load(root)
  text = table(sets, args.methods.split(","))
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text)


if __name__ == "__main__":
  main()
