"""The short summary of a sweep: how many runs are done and the AUROC table.

Printed at the end of `python -m cnf_jax.sweep`; `python -m cnf_jax.report --json`
prints `status` as JSON. The full report (every table, plots) is tables.write_report.
"""
from typing import Dict

from cnf_jax.reports import tables


def status(root: str) -> Dict:
  """{"runs": {"done": n, "running": n, "empty": n}, "auroc": {setting: {method: {mean, std, n}}}}."""
  rows = tables.load_runs(root)
  counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "running", "empty")}
  return {"runs": counts, "auroc": tables.summarize(rows)}


def summary_text(root: str) -> str:
  """Run counts, the AUROC table (methods as rows, settings as columns) and what is missing."""
  counts = status(root)["runs"]
  lines = [f"sweep {root}: {sum(counts.values())} runs, {counts['done']} done, {counts['running']} running, "
           f"{counts['empty']} not started"]
  full = tables.build_report(root, declared=tables.declared_run_names(root))
  if "auroc" in full["markdown"]:
    lines += ["AUROC (%), mean ± std over seeds; methods as rows, as in the paper", full["markdown"]["auroc"]]
  if full["missing"]:
    lines += ["missing:"] + [f"  {m}" for m in full["missing"]]
  lines.append(f"tables and plots: python -m cnf_jax.report --workdir={root}")
  return "\n".join(lines)
