"""Steps/s of the training loop a CLI run uses, against the same loop of another checkout (A/B).

  PYTHONPATH=. python benchmarks/loop_throughput.py --baseline_tree=/path/to/old/checkout
  PYTHONPATH=. python benchmarks/loop_throughput.py --baseline_tree=... --steps=300 --rounds=3 --dtype=bfloat16

Each measurement is a fresh process that trains one contrastive flow of the paper's
size (8 AllInOne blocks, hidden 512x2, D=128, batches 256 + 256, synthetic unit-sphere
features) through `fit_flow` with checkpoints and metrics as a run writes them, and
reports steps/s over the steps after the first log interval (compilation excluded).
Rounds alternate baseline and candidate so that the machine's load drifts onto both;
the figure to read is the ratio of medians (candidate / baseline), not the absolute speed.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MEASURE = r'''
import json, os, sys, tempfile, time
import numpy as np
steps, dtype = int(sys.argv[1]), sys.argv[2]
try:
  from cnf_jax.training.loop import fit_flow
  from cnf_jax.training.plan import Objective
  from cnf_jax.training.summaries import MetricsWriter
except ImportError:   # a checkout from before the one training loop
  from cnf_jax.train import MetricsWriter, Objective, fit_flow
try:
  from cnf_jax.experiments import config_lib
except ImportError:
  from cnf_jax import config_lib
from cnf_jax.flows import flow_from_config
c = config_lib.default_config()
c.flow.compute_dtype = dtype
c.train.steps, c.train.log_every, c.train.checkpoint_every = steps, 50, steps
c.train.parallel = "single"
rng = np.random.default_rng(0)
sphere = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
inliers, contrastive = sphere(rng.normal(size=(5000, 128)) + 0.3), sphere(rng.normal(size=(10000, 128)))
with tempfile.TemporaryDirectory() as work:
  writer = MetricsWriter(os.path.join(work, "metrics.jsonl"))
  fit_flow("cf", flow_from_config(c.flow, 128), c, inliers, contrastive, Objective("contrastive", 0.0),
           work, 0, writer)
  records = [json.loads(l) for l in open(os.path.join(work, "metrics.jsonl"))]
# The first interval holds the compilation; the others are steady-state training.
print(json.dumps({"steps_per_s": float(np.median([r["steps_per_s"] for r in records[1:]])),
                  "final_loss": records[-1]["loss"]}))
'''


def measure(tree: str, steps: int, dtype: str) -> dict:
  env = dict(os.environ, PYTHONPATH=tree, CNF_JAX_QUIET="1")
  proc = subprocess.run([sys.executable, "-c", MEASURE, str(steps), dtype], env=env, cwd=tree,
                        capture_output=True, text=True)
  if proc.returncode != 0:
    raise SystemExit(f"measurement in {tree} failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


flags.DEFINE_string("baseline_tree", None, "Checkout to compare with (e.g. a git worktree of main).")
flags.DEFINE_string("candidate_tree", HERE, "Checkout measured against it (default: this one).")
flags.DEFINE_integer("steps", 300, "Training steps per measurement.")
flags.DEFINE_integer("rounds", 3, "Alternating baseline/candidate rounds.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "flow.compute_dtype of both.")
flags.mark_flag_as_required("baseline_tree")


def main(argv):
  del argv
  args = flags.FLAGS
  runs = {"baseline": [], "candidate": []}
  for _ in range(args.rounds):
    for name in ("baseline", "candidate"):
      time.sleep(0.5)   # let the previous process's threads go idle
      runs[name].append(measure(getattr(args, f"{name}_tree"), args.steps, args.dtype))
  speed = {k: statistics.median(r["steps_per_s"] for r in v) for k, v in runs.items()}
  print(json.dumps({"steps": args.steps, "rounds": args.rounds, "dtype": args.dtype, "cpu_count": os.cpu_count(),
                    "baseline_steps_per_s": [round(r["steps_per_s"], 2) for r in runs["baseline"]],
                    "candidate_steps_per_s": [round(r["steps_per_s"], 2) for r in runs["candidate"]],
                    "ratio_candidate_over_baseline": round(speed["candidate"] / speed["baseline"], 3),
                    "final_loss": {k: [round(r["final_loss"], 4) for r in v] for k, v in runs.items()}},
                   indent=1))


if __name__ == "__main__":
  app.run(main)
