"""python -m cnf_jax.report: the tables and plots of a sweep, or of one ablation study.

  python -m cnf_jax.report --workdir=/tmp/cnf/table                # <root>/report/report.md + PNGs
  python -m cnf_jax.report /tmp/cnf/table                          # the same (the root as an argument)
  python -m cnf_jax.report --workdir=/tmp/cnf/table --json         # run counts and metric tables as JSON
  python -m cnf_jax.report --workdir=R/flows --also=R/baselines --config=configs/oneclass.py --out=DIR
  python -m cnf_jax.report --study=contamination --workdir=/tmp/cnf/contamination   # Fig. 6

--workdir is the sweep root (`python -m cnf_jax.sweep --workdir=...`): one run directory per
run. The report (cnf_jax.reports.tables) writes <out>/report.md, default out <root>/report:
the AUROC table in the paper's shape, Table 2 for --method, the dataset-vs-dataset table,
the runs and cells without results, and the PNG plots (score histograms, Fig. 5 images),
and prints the markdown. --json prints {"runs": {done, running, empty}, "auroc" | "aupr" | "fpr95": {setting:
{method: {mean, std, n}}}} and writes nothing.

--select chooses, per group of runs (--group_by, default seed and data.inlier_class) and per
method, the run whose label-free criterion (results.json's "selection": held-out inliers against
held-out contrastive rows, train.validation_fraction > 0) is highest, and reports its test
AUROC next to the best one and Spearman's rho between criterion and test AUROC
(cnf_jax.evaluation.selection): <out>/selection.md and selection.json, default out <root>/report.

--study=contamination|narrow|eps|tabular writes the ablation study's plots and table
(cnf_jax.reports.ablations: <out>/<study>.png, <study>.md, default out the sweep root),
prints their paths and the table.

Bad input prints one line `error: ...` and exits 2.
"""
import dataclasses
import json
import os
import sys
from typing import Sequence

from absl import flags

from cnf_jax import cli
from cnf_jax.errors import UserInputError

STUDIES = ("contamination", "narrow", "eps", "tabular")   # cnf_jax.reports.ablations.STUDIES
# Flags of the sweep report that an ablation study's report does not read.
_NOT_FOR_STUDIES = ("config", "method", "data_dir", "examples", "plots", "no_plots", "also", "json", "select",
                    "group_by")


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "The sweep root (cnf_jax.sweep's --workdir): one directory per run.",
                      flag_values=fv)
  flags.DEFINE_string("out", None, "Output folder (default <workdir>/report; for --study the sweep root).",
                      flag_values=fv)
  flags.DEFINE_string("config", None, "The config file that declares the sweep, to list runs never launched "
                      "(default: <workdir>/sweep.json, which cnf_jax.sweep writes).", flag_values=fv)
  flags.DEFINE_string("method", "cf", "Method of the per-anomaly-class table (Table 2) and of the examples.",
                      flag_values=fv)
  flags.DEFINE_string("data_dir", None, "TFDS data_dir, to show images of tfds: sources.", flag_values=fv)
  flags.DEFINE_integer("examples", 3, "Images per group in the examples figure (Fig. 5).", flag_values=fv)
  flags.DEFINE_bool("plots", True, "Write the PNG plots (--noplots: markdown only).", flag_values=fv)
  flags.DEFINE_bool("no_plots", False, "Same as --noplots.", flag_values=fv)
  flags.DEFINE_multi_string("also", [], "Another sweep root with the same runs and other methods (e.g. baselines "
                            "run separately); its AUROCs join the tables. Repeatable.", flag_values=fv)
  flags.DEFINE_bool("json", False, "Print the run counts and the AUROC, AUPR and FPR95 tables as JSON; write nothing.",
                    flag_values=fv)
  flags.DEFINE_bool("select", False, "Choose each method's settings among the runs by the label-free criterion "
                    "and report the choice (cnf_jax.evaluation.selection).", flag_values=fv)
  flags.DEFINE_list("group_by", ["seed", "data.inlier_class"], "With --select: the config keys whose values make "
                    "a group of candidate runs; the runs of a group differ in their settings.", flag_values=fv)
  flags.DEFINE_enum("study", None, list(STUDIES), "An ablation study's plots and table instead of the sweep "
                    "report (paper 5.3, 5.4).", flag_values=fv)


def sweep_root(fv: flags.FlagValues, positional: Sequence[str]) -> str:
  """--workdir, or the root given as the one argument (the command's older form)."""
  if positional and fv.workdir and positional[0] != fv.workdir:
    raise UserInputError(f"two sweep roots: --workdir={fv.workdir} and {positional[0]}; give one")
  root = fv.workdir or (positional[0] if positional else None)
  if not root:
    raise UserInputError("--workdir is required: the sweep root, e.g. --workdir=/tmp/cnf/table")
  return root


def write_selection(root: str, out: str, group_by: Sequence[str]) -> int:
  """--select: writes <out>/selection.md and selection.json and prints the markdown."""
  from cnf_jax.evaluation import selection
  from cnf_jax.files import write_json_atomic, atomic_write
  from cnf_jax.reports import tables
  runs = [r for r in tables.load_runs(root) if r["status"] == "done"]
  chosen = selection.select_runs(runs, group_by)
  if not chosen:
    raise UserInputError(f"no finished run under {root} records the selection criterion; run the sweep with "
                         "--set=train.validation_fraction=0.1 (or any value in (0, 1)) and a contrastive set")
  out = os.path.expanduser(out or os.path.join(root, "report"))
  os.makedirs(out, exist_ok=True)
  text = selection.markdown(chosen)
  with atomic_write(os.path.join(out, "selection.md"), "w") as f:
    f.write(text)
  write_json_atomic(os.path.join(out, "selection.json"), [
      {"group": s.group, "method": s.method, "rho": s.rho, "chosen": dataclasses.asdict(s.chosen),
       "oracle": dataclasses.asdict(s.oracle), "candidates": [dataclasses.asdict(c) for c in s.candidates]}
      for s in chosen])
  print(text)
  print(f"wrote {os.path.join(out, 'selection.md')}", file=sys.stderr)
  return 0


@cli.command
def main(argv: Sequence[str]) -> int:
  fv, positional = cli.parse(define_flags, argv, __doc__, max_positional=1)
  root = sweep_root(fv, positional)
  if fv.study:
    given = [f"--{name}" for name in _NOT_FOR_STUDIES if fv[name].present]
    if given:
      raise UserInputError(f"{', '.join(given)}: not used by --study reports, which take --workdir and --out only")
    from cnf_jax.reports import ablations
    for path in ablations.write_report(fv.study, root, fv.out):
      print(path)
    with open(os.path.join(os.path.expanduser(fv.out or root), f"{fv.study}.md")) as f:
      print(f.read())
    return 0
  if fv.select:
    return write_selection(root, fv.out, fv.group_by)
  if fv.json:
    from cnf_jax.reports import summary
    print(json.dumps(summary.status(root), indent=1, sort_keys=True))
    return 0
  from cnf_jax.reports import tables
  path = tables.write_report(root, fv.out, config_path=fv.config, method=fv.method,
                             plots=fv.plots and not fv.no_plots, data_dir=fv.data_dir, examples=fv.examples,
                             also=fv.also)
  with open(path) as f:
    print(f.read())
  print(f"wrote {path}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  cli.run(main)
