"""Wall time from "start the table" to "read the table", and what the fast settings cost in AUROC.

  R=~/.cache/cnf_jax/features32
  # the reference: CF's column of Table 1 (10 classes x 3 seeds), fixed 3,000 steps
  python benchmarks/time_to_table.py --workdir=/tmp/ttt/fixed --features_root=$R
  # the fast path, compared with it class by class
  python benchmarks/time_to_table.py --workdir=/tmp/ttt/fast --features_root=$R \
      --set=train.steps=1000 --reference=/tmp/ttt/fixed
  # all four flow methods
  python benchmarks/time_to_table.py --workdir=/tmp/ttt/flows --features_root=$R --methods=cf,flow,flow_ratio,oe

One timed run is what a user types: `python -m cnf_jax.sweep` over the selected runs of
configs/oneclass.py (vmapped programs, `--arg` words such as `chosen`, `--set` settings)
then `python -m cnf_jax.report`, each in its own process, so the time includes start-up, data
loading, compilation, training, scoring and the report. The workdir must not hold finished
runs (a finished run is skipped by the sweep and would not be timed): an error says so.

Prints JSON lines: one per (method, class) with the mean test AUROC (%) over the seeds, the
reference's, their difference and the mean step whose parameters were kept; then one summary
line (wall seconds in total and per stage, runs, per-method mean AUROC, the dtype of the flows'
products, the largest |difference| and whether every class is within --tolerance points). The
timed run's seconds are also kept in <workdir>/time_to_table.times.json as soon as it ends;
`--existing` prints them again.
"""
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np
from absl import app
from absl import flags

from cnf_jax.errors import UserInputError
from cnf_jax.files import write_json_atomic
from cnf_jax.tasks.oneclass import CIFAR10_CLASSES

FLAGS = flags.FLAGS
TIMES_FILE = "time_to_table.times.json"   # in --workdir: the timed run's wall seconds and settings

flags.DEFINE_string("workdir", None, "Sweep root of the timed run (must hold no finished run).")
flags.DEFINE_string("features_root", "~/.cache/cnf_jax/features32", "Feature datasets (benchmarks/make_features.sh).")
flags.DEFINE_string("config", "configs/oneclass.py", "Config that declares the sweep.")
flags.DEFINE_string("arg", "chosen", "Words added to every run's config arg (the label-free choices by default).")
flags.DEFINE_list("methods", ["cf"], "Methods to train and score.")
flags.DEFINE_list("classes", list(CIFAR10_CLASSES), "CIFAR-10 classes.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
flags.DEFINE_multi_string("set", [], "KEY=VALUE passed to the sweep's --set (e.g. train.steps=1000); repeatable.")
flags.DEFINE_string("reference", "", "Sweep root of a reference run of the same runs: per-class differences.")
flags.DEFINE_bool("existing", False, "Run nothing: read the finished runs in --workdir (no times), e.g. to compare "
                  "them with a reference that finished later.")
flags.DEFINE_float("tolerance", 0.3, "Largest |AUROC difference| (points) per class and method counted as equal.")


def run_names(classes: Sequence[str], seeds: Sequence[str]) -> List[str]:
  return [f"{c}-seed={s}" for s in seeds for c in classes]


def timed(argv: Sequence[str], log_path: str) -> float:
  """Runs argv (stdout + stderr to log_path); returns its wall seconds, raises on failure."""
  start = time.perf_counter()
  with open(log_path, "w") as log:
    code = subprocess.call(list(argv), stdout=log, stderr=subprocess.STDOUT)
  if code:
    raise SystemExit(f"error: {' '.join(argv[:4])} ... exited {code}; see {log_path}")
  return time.perf_counter() - start


def read_runs(root: str, names: Sequence[str]) -> Dict[str, dict]:
  """{run name: results.json} of the named runs under root; an error names a missing one."""
  out = {}
  for name in names:
    path = os.path.join(root, name, "results.json")
    if not os.path.exists(path):
      raise UserInputError(f"{path} is missing: the run did not finish (see the sweep's log)")
    with open(path) as f:
      out[name] = json.load(f)
  return out


def per_class(results: Dict[str, dict], method: str, classes: Sequence[str]) -> Dict[str, Tuple[float, float]]:
  """{class: (mean test AUROC in %, mean kept step, or None for a method without one)} over the
  runs of that class."""
  out = {}
  for c in classes:
    runs = [r for name, r in results.items() if name.startswith(c + "-")]
    auroc = 100 * float(np.mean([r["auroc"][method] for r in runs]))
    steps = [r.get("early_stopping", {}).get("models", {}).get(method, {}).get("best_step") for r in runs]
    steps = [s for s in steps if s is not None]
    out[c] = (auroc, float(np.mean(steps)) if steps else None)
  return out


def run_and_time(root: str, names: Sequence[str]) -> Dict[str, float]:
  """Runs the sweep, then the report, each as its own process; their wall seconds."""
  done = [n for n in names if os.path.exists(os.path.join(root, n, "results.json"))]
  if done:
    raise UserInputError(f"{root} already holds {len(done)} finished runs (e.g. {done[0]}): they would be "
                         "skipped, not timed; use a new --workdir (or --existing to read them)")
  os.makedirs(root, exist_ok=True)
  sweep = [sys.executable, "-m", "cnf_jax.sweep", f"--config={FLAGS.config}", f"--workdir={root}",
           f"--runs={','.join(names)}", "--quiet", f"--set=methods={','.join(FLAGS.methods)}",
           f"--set=data.features_root={FLAGS.features_root}"]
  sweep += [f"--arg={FLAGS.arg}"] if FLAGS.arg else []
  sweep += [f"--set={s}" for s in FLAGS.set]
  sweep_s = timed(sweep, os.path.join(root, "time_to_table.sweep.log"))
  report_s = timed([sys.executable, "-m", "cnf_jax.report", f"--workdir={root}"],
                   os.path.join(root, "time_to_table.report.log"))
  return {"wall_s": round(sweep_s + report_s, 1), "sweep_s": round(sweep_s, 1), "report_s": round(report_s, 1)}


def main(argv):
  del argv
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  root = os.path.abspath(os.path.expanduser(FLAGS.workdir))
  names = run_names(FLAGS.classes, FLAGS.seeds)
  summary = {"workdir": root, "runs": len(names), "methods": FLAGS.methods}
  times_path = os.path.join(root, TIMES_FILE)
  if not FLAGS.existing:
    times = dict(arg=FLAGS.arg, set=FLAGS.set, **run_and_time(root, names))
    # Kept beside the runs at once: the times survive a lost stdout or a failure further down
    # (a --reference without these runs), and --existing reports them again.
    write_json_atomic(times_path, times)
    summary.update(times)
  elif os.path.exists(times_path):
    with open(times_path) as f:
      summary.update(json.load(f))
  results = read_runs(root, names)
  # What flow.compute_dtype='auto' resolved to in the runs (it depends on the CPU).
  summary["compute_dtype"] = sorted({r["compute_dtype"] for r in results.values() if "compute_dtype" in r})
  reference = read_runs(os.path.abspath(os.path.expanduser(FLAGS.reference)), names) if FLAGS.reference else None
  summary.update(mean_auroc={}, reference=FLAGS.reference or None)
  diffs = []
  for method in FLAGS.methods:
    mine = per_class(results, method, FLAGS.classes)
    ref = per_class(reference, method, FLAGS.classes) if reference else {}
    for c in FLAGS.classes:
      line = {"method": method, "class": c, "auroc": round(mine[c][0], 2), "kept_step": mine[c][1]}
      if ref:
        diff = mine[c][0] - ref[c][0]
        diffs.append(diff)
        line.update(reference_auroc=round(ref[c][0], 2), diff=round(diff, 2), reference_kept_step=ref[c][1])
      print(json.dumps(line))
    summary["mean_auroc"][method] = round(float(np.mean([mine[c][0] for c in FLAGS.classes])), 2)
    if ref:
      summary.setdefault("reference_mean_auroc", {})[method] = round(
          float(np.mean([ref[c][0] for c in FLAGS.classes])), 2)
  if diffs:
    summary["max_abs_diff"] = round(float(np.max(np.abs(diffs))), 2)
    summary["within_tolerance"] = bool(np.max(np.abs(diffs)) <= FLAGS.tolerance)
    summary["tolerance"] = FLAGS.tolerance
  import jax   # after the timed processes: the platform that ran them
  summary["platform"] = jax.devices()[0].platform
  summary["device"] = jax.devices()[0].device_kind
  summary["cpu_count"] = os.cpu_count()
  print(json.dumps(summary), flush=True)


if __name__ == "__main__":
  try:
    app.run(main)
  except UserInputError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
