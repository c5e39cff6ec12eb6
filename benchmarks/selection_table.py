"""The label-free choice of every method's settings, next to the defaults: one markdown table.

  python -m cnf_jax.report --select --workdir=<sweep of configs/selection.py>   # writes report/selection.json
  python benchmarks/selection_table.py --selection=<root>/report/selection.json [--config=configs/oneclass.py:airplane]

Per method, over the groups (class, seed) that every method has: the test AUROC of the
candidate with the config's default settings (configs/oneclass.py: eps 0, noise 0.02, KDE
bandwidth 1, k = 5 / 20 / 5, ...), of the candidate the criterion chose, of the best candidate
(the oracle: what choosing on test labels would report) and the mean Spearman rho between the
criterion and the test AUROC; then the chosen test AUROC per class, and per group rho over the
candidates of all methods together. Prints JSON lines with the same figures after the markdown.
"""
import collections
import json
from typing import Dict, List, Sequence

import numpy as np
from absl import app
from absl import flags

from cnf_jax.evaluation import selection
from cnf_jax.experiments import config_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("selection", None, "selection.json written by python -m cnf_jax.report --select.")
flags.DEFINE_string("config", "configs/oneclass.py:airplane", "Config (path:arg) whose values are the defaults.")


def default_settings(spec: str) -> Dict[str, str]:
  """{dotted key: value as text} of the config `path:arg`, in the form of the candidates' settings."""
  path, _, arg = spec.partition(":")
  config = config_lib.load_config_module(path).get_config(arg or None)
  return selection.setting_labels(json.loads(config.to_json()))


def is_default(settings: str, defaults: Dict[str, str]) -> bool:
  """Whether every 'key=value' of a candidate's settings is the config's value of that key."""
  if settings == "default":
    return True
  pairs = [s.split("=", 1) for s in settings.split()]
  return all(defaults.get(k) == v for k, v in pairs)


def table(selections: Sequence[dict], defaults: Dict[str, str]) -> List[dict]:
  """One row per method: groups, default / chosen / oracle mean test AUROC (%), mean rho."""
  groups_of = collections.defaultdict(set)
  for s in selections:
    groups_of[s["method"]].add(s["group"])
  common = set.intersection(*groups_of.values())
  rows = []
  for method in dict.fromkeys(s["method"] for s in selections):
    sel = [s for s in selections if s["method"] == method and s["group"] in common]
    default = [next((c["test_auroc"] for c in s["candidates"] if is_default(c["settings"], defaults)), np.nan)
               for s in sel]
    rhos = [s["rho"] for s in sel if s["rho"] is not None]
    mean = lambda values: 100 * float(np.mean(values))
    rows.append({"method": method, "groups": len(sel), "candidates": max(len(s["candidates"]) for s in sel),
                 "default": mean(default), "chosen": mean([s["chosen"]["test_auroc"] for s in sel]),
                 "oracle": mean([s["oracle"]["test_auroc"] for s in sel]),
                 "rho": float(np.mean(rhos)) if rhos else None,
                 "chosen_settings": {s["group"]: s["chosen"]["settings"] for s in sel},
                 "chosen_by_group": {s["group"]: 100 * s["chosen"]["test_auroc"] for s in sel}})
  return rows


def pooled_rho(selections: Sequence[dict]) -> Dict[str, float]:
  """Per group: Spearman's rho between criterion and test AUROC over the candidates of every
  method together (can the criterion also rank methods against each other?)."""
  out = {}
  for group in sorted({s["group"] for s in selections}):
    cands = [selection.Candidate(**c) for s in selections if s["group"] == group for c in s["candidates"]]
    out[group] = selection.rank_correlation(cands)
  return out


def markdown(rows: Sequence[dict]) -> str:
  groups = sorted(rows[0]["chosen_by_group"])
  lines = ["| method | candidates | default settings | chosen by the criterion | oracle | mean Spearman rho |",
           "|---|---|---|---|---|---|"]
  for r in sorted(rows, key=lambda r: -r["chosen"]):
    rho = "-" if r["rho"] is None else f"{r['rho']:.2f}"
    lines.append(f"| {r['method']} | {r['candidates']} | {r['default']:.2f} | **{r['chosen']:.2f}** | "
                 f"{r['oracle']:.2f} | {rho} |")
  lines += ["", "| method | " + " | ".join(g.replace("seed=", "s").replace("data.inlier_class=", "") for g in groups) +
            " | settings chosen |", "|---|" + "---|" * (len(groups) + 1)]
  for r in sorted(rows, key=lambda r: -r["chosen"]):
    chosen = "; ".join(sorted(set(r["chosen_settings"].values())))
    by_group = " | ".join(f"{r['chosen_by_group'][g]:.2f}" for g in groups)
    lines.append(f"| {r['method']} | {by_group} | {chosen} |")
  return "\n".join(lines)


def main(argv):
  del argv
  with open(FLAGS.selection) as f:
    selections = json.load(f)
  rows = table(selections, default_settings(FLAGS.config))
  print(markdown(rows))
  pooled = pooled_rho(selections)
  print("\nSpearman's rho over the candidates of all methods together: " +
        ", ".join(f"{g.replace('seed=0,data.inlier_class=', '')} {r:.2f}" for g, r in pooled.items() if r is not None))
  for r in rows:
    print(json.dumps(r))
  print(json.dumps({"pooled_rho": pooled}))


if __name__ == "__main__":
  flags.mark_flag_as_required("selection")
  app.run(main)
