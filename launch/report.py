"""The table of a sweep: AUROC per setting (mean ± std over seeds) from each run's results.json.

  python -m launch.report --workdir=/tmp/cnf/table             # markdown table + run status
  python -m launch.report --workdir=/tmp/cnf/table --json       # the same as one JSON object

The full report (all tables, missing runs, PNG plots) is `python -m cnf_jax.report <root>`.
"""
import json
import sys

from absl import app
from absl import flags

from cnf_jax.reports import tables
from cnf_jax.errors import UserInputError



def print_report(root: str, as_json: bool = False) -> None:
  rows = tables.load_runs(root)
  table = tables.summarize(rows)
  status = {s: sum(r["status"] == s for r in rows) for s in ("done", "running", "empty")}
  if as_json:
    print(json.dumps({"runs": status, "auroc": table}, indent=1, sort_keys=True))
    return
  print(f"sweep {root}: {len(rows)} runs, {status['done']} done, {status['running']} running, "
        f"{status['empty']} not started")
  full = tables.build_report(root, declared=tables.declared_run_names(root))
  if "auroc" in full["markdown"]:
    print("AUROC (%), mean ± std over seeds; methods as rows, as in the paper")
    print(full["markdown"]["auroc"])
  if full["missing"]:
    print("missing:\n" + "\n".join(f"  {m}" for m in full["missing"]))
  print(f"tables and plots: python -m cnf_jax.report {root}")


def main(argv):
  del argv
  if not flags.FLAGS.workdir:
    print("error: --workdir (the sweep root) is required", file=sys.stderr)
    sys.exit(2)
  try:
    print_report(flags.FLAGS.workdir, flags.FLAGS.json)
  except UserInputError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  # Defined here, not at import: launch.sweep imports print_report and has its own --workdir.
  flags.DEFINE_string("workdir", None, "Sweep root (the launcher's --workdir).")
  flags.DEFINE_bool("json", False, "Print JSON instead of markdown.")
  app.run(main)
