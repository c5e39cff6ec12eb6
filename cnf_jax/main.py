"""Command line: python -m cnf_jax.main --config=configs/<x>.py[:arg] --workdir=<dir> [--config.a.b=v ...]

Only parses flags; the work is `cnf_jax.experiments.experiment.train_and_evaluate`.

Exit codes: 0 done; 2 bad input, a workdir in use by another process (without --wait),
a read-only workdir without this finished run, or a full disk (one "error: ..." line);
3 a non-finite loss; 75 stopped by SIGTERM after saving a checkpoint (rerun to resume).
"""
import json
import logging as py_logging
import os
import re
import sys
import time

from cnf_jax.training import preemption
if __name__ == "__main__":
  # Before the imports below (jax: seconds): a SIGTERM from here on stops before training, exit 75.
  preemption.install()

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from cnf_jax import disk
from cnf_jax.experiments import config_lib
from cnf_jax.training import host_memory
from cnf_jax.errors import NonFiniteLossError, UserInputError

config_flags.DEFINE_config_file("config", None, "Experiment config file, e.g. configs/toy2d.py or configs/oneclass.py:deer.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results (resumes if it exists).")
flags.DEFINE_bool("wait", False, "If another process runs in --workdir, wait for it to end instead of exiting "
                  "with code 2.")
# Multi-host data parallelism: every process runs the same command; the workdir must be one
# directory all processes see (process 0 writes results and metrics, orbax coordinates checkpoints).
flags.DEFINE_bool("quiet", False, "No progress bars (for scripts); errors and the final JSON line still print.")
flags.DEFINE_bool("distributed", False, "jax.distributed.initialize() from the environment "
                  "(Cloud TPU pod slices, SLURM, ...): run the same command on every host.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for jax.distributed where "
                    "the cluster is not detected (with --num_processes and --process_id).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes-1 (with --coordinator_address).")

EXIT_USER_ERROR = 2
EXIT_NON_FINITE = 3


def _fail(message: str, code: int = EXIT_USER_ERROR):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(code)


def _load_config_for_checking(argv):
  """Loads the --config file the way config_flags will, to check override keys first."""
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None:
    return None
  path, _, arg = spec.partition(":")
  module = config_lib.load_config_module(path)
  return module.get_config(arg) if arg else module.get_config()


def parse_flags(argv):
  """absl flag parsing with one-line errors for bad configs and unknown override keys."""
  try:
    config = _load_config_for_checking(argv)
    if config is not None:
      for a in argv:
        m = re.match(r"--config\.([A-Za-z0-9_.]+)(=|$)", a)
        if m:
          config_lib.check_override_key(config, m.group(1))
    return flags.FLAGS(argv)
  except UserInputError as e:
    _fail(str(e))
  except flags.Error as e:
    _fail(f"{e}")


def start_distributed(coordinator_address, num_processes, process_id):
  """jax.distributed.initialize, before anything touches a device; one-line errors for bad flags."""
  if coordinator_address and (num_processes is None or process_id is None):
    _fail("--coordinator_address needs --num_processes and --process_id")
  if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
    _fail(f"--process_id={process_id} must be in 0..{num_processes - 1}")
  import jax
  # Collectives between CPU processes (tests, CPU clusters) go through gloo; TPU/GPU ignore this.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address, num_processes, process_id)
  print(f"jax.distributed: process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.local_device_count()} of {jax.device_count()} devices here", file=sys.stderr, flush=True)


def main(argv):
  del argv
  if flags.FLAGS.config is None:
    _fail("--config is required, e.g. --config=configs/toy2d.py")
  if not flags.FLAGS.workdir:
    _fail("--workdir is required: where checkpoints, metrics and results.json go")
  try:
    host_memory.configure()   # before any compiled step runs (see host_memory)
  except UserInputError as e:
    _fail(str(e))
  # Our progress at INFO; libraries (orbax logs every save) at WARNING.
  logging.set_verbosity(logging.WARNING)
  py_logging.getLogger("cnf_jax").setLevel(py_logging.INFO)
  if flags.FLAGS.quiet:
    from cnf_jax.training import progress
    progress.set_quiet(True)
  from cnf_jax.training.checkpoints import quiet_orbax_after_failures
  quiet_orbax_after_failures()
  if flags.FLAGS.distributed or flags.FLAGS.coordinator_address:
    start_distributed(flags.FLAGS.coordinator_address, flags.FLAGS.num_processes, flags.FLAGS.process_id)
  from cnf_jax.experiments import experiment  # imported late: flags parse fast, jax loads only for real runs.
  start = time.perf_counter()
  try:
    results = experiment.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir, wait=flags.FLAGS.wait)
  except UserInputError as e:
    _fail(str(e))
  except NonFiniteLossError as e:
    _fail(str(e), EXIT_NON_FINITE)
  except preemption.Preempted as e:
    print(f"preempted: {e}", file=sys.stderr)
    sys.exit(preemption.EXIT_PREEMPTED)
  except Exception as e:
    if not disk.is_disk_full(e):   # a full disk where no writer expected it (a library's own files)
      raise
    _fail(f"no space left on the device ({getattr(e, 'filename', None) or flags.FLAGS.workdir}): "
          "free some space and rerun the same command (it resumes from the last checkpoint)")
  seconds = time.perf_counter() - start
  summary = {"auroc": results["auroc"], "aupr": results["aupr"], "fpr95": results["fpr95"],
             "seconds": round(seconds, 1),
             "results": os.path.join(flags.FLAGS.workdir, "results.json")}
  for key in ("eps", "tv_distance"):
    if key in results:
      summary[key] = results[key]
  if "plot" in results:  # stored relative to the workdir, so a workdir can be moved.
    summary["plot"] = os.path.join(flags.FLAGS.workdir, results["plot"])
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
