"""python -m cnf_jax.sweep: trains the sweep declared next to a config, as vmapped programs.

  python -m cnf_jax.sweep --config=configs/oneclass.py --workdir=/tmp/cnf/oneclass_table
  python -m cnf_jax.sweep --config=configs/toy2d.py --arg=runlocal --workdir=/tmp/cnf/toy2d_seeds

The work is `cnf_jax.experiments.sweep.run_declared_sweep`.
"""
import json
import logging
import sys
import time
from typing import Sequence

from cnf_jax.training import preemption
if __name__ == "__main__":
  # Before the imports below (jax: seconds): SIGTERM checkpoints every run at the next chunk end, exit 75.
  preemption.install()

from cnf_jax import disk
from cnf_jax.errors import NonFiniteLossError, UserInputError
from cnf_jax.experiments import config_lib
from cnf_jax.experiments.sweep import run_declared_sweep
from cnf_jax.training import host_memory


def main(argv: Sequence[str]) -> None:
  del argv
  from absl import flags
  from absl import logging as absl_logging
  FLAGS = flags.FLAGS
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("cnf_jax").setLevel(logging.INFO)
  if not FLAGS.config or not FLAGS.workdir:
    print("error: --config (a config file with sweep()) and --workdir (the sweep root) are required",
          file=sys.stderr)
    sys.exit(2)
  start = time.perf_counter()
  from cnf_jax.training.checkpoints import quiet_orbax_after_failures
  quiet_orbax_after_failures()
  try:
    host_memory.configure(default="default")
    results = run_declared_sweep(FLAGS.config, FLAGS.workdir, FLAGS.arg, [r for r in FLAGS.runs if r],
                                 config_lib.parse_assignments(FLAGS.set), wait=FLAGS.wait)
  except UserInputError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except NonFiniteLossError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(3)
  except preemption.Preempted as e:
    print(f"preempted: {e}", file=sys.stderr)
    sys.exit(preemption.EXIT_PREEMPTED)
  except Exception as e:
    if not disk.is_disk_full(e):
      raise
    print(f"error: no space left on the device ({getattr(e, 'filename', None) or FLAGS.workdir}); free some "
          "space and rerun the same command (it resumes from the last checkpoints)", file=sys.stderr)
    sys.exit(2)
  for name, r in results.items():
    print(json.dumps({"run": name, "auroc": r["auroc"]}))
  print(json.dumps({"runs": len(results), "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
  from absl import app
  from absl import flags
  flags.DEFINE_string("config", None, "Config file that declares sweep(add), e.g. configs/oneclass.py.")
  flags.DEFINE_string("arg", "", "Words appended to every run's config arg, e.g. runlocal.")
  flags.DEFINE_string("workdir", None, "Sweep root; run r writes to <workdir>/<r.name>.")
  flags.DEFINE_list("runs", [], "Only these run names (default: all).")
  flags.DEFINE_multi_string("set", [], "KEY=VALUE set in every run's config, e.g. data.path=/x.npz.")
  flags.DEFINE_bool("wait", False, "Wait for other processes that run in these workdirs instead of exiting 2.")
  app.run(main)
