"""The short summary of a sweep: how many runs are done and the AUROC table (AUPR and FPR95 in --json).

Printed at the end of `python -m cnf_jax.sweep`; `python -m cnf_jax.report --json`
prints `status` as JSON. The full report (every table, plots) is tables.write_report.
"""
from typing import Dict

from cnf_jax.reports import tables


def status(root: str) -> Dict:
  """{"runs": {"done": n, "running": n, "empty": n}, metric: {setting: {method: {mean, std, n}}}}
  for each metric of tables.METRICS (auroc, aupr, fpr95; empty where no run recorded it)."""
  rows = tables.load_runs(root)
  counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "running", "empty")}
  return {"runs": counts, **{metric: tables.summarize(rows, metric) for metric in tables.METRICS}}


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
