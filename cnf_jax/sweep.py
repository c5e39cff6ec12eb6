"""python -m cnf_jax.sweep: runs the sweep declared next to a config, here or on a Cloud TPU VM.

  # here, as vmapped programs in this process (the default)
  python -m cnf_jax.sweep --config=configs/oneclass.py --workdir=/tmp/cnf/table
  # smoke test: every run's config gets the word runlocal
  python -m cnf_jax.sweep --config=configs/toy2d.py --arg=runlocal --workdir=/tmp/cnf/toy2d_seeds
  # here, one `python -m cnf_jax.main` process per run, 2 at a time (each logs to <run>/launch.log)
  python -m cnf_jax.sweep --config=configs/oneclass.py --workdir=/tmp/cnf/table --parallel=2
  # Cloud TPU: print every gcloud command (drop --dry_run to run them; see launch/README.md)
  python -m cnf_jax.sweep --config=configs/oneclass.py --backend=tpu --workdir=gs://my-bucket/cnf/table \\
      --tpu=cnf-v5e --zone=us-west4-a --project=my-project --accelerator_type=v5litepod-8 --spot --dry_run
  # then every table and plot
  python -m cnf_jax.report --workdir=/tmp/cnf/table

Hyper-parameters live in the config's sweep(add) (classes x seeds x settings); the
flags only say where and how to run. Run r writes <workdir>/<r.name>; <workdir>/sweep.json
keeps the declaration, so that the report names the runs never launched. Finished runs
(results.json present) are skipped unless --rerun (which restores their final checkpoints
and evaluates again); interrupted runs resume from their latest checkpoint. The command
ends with the table: AUROC (%) per setting, mean ± std over seeds (--backend=local).

--vmap / --novmap. With --vmap, runs that differ only in seed, data.* and objective.eps
train as one jax.vmap-ed program per model (cnf_jax.experiments.sweep.run_declared_sweep),
in this process; with --novmap every run is its own `python -m cnf_jax.main` process,
--parallel at a time. Both leave the same workdirs (tests/test_sweep.py checks equality).
Default: --vmap for --backend=local, since one compilation then serves the whole table (the
ten classes x three seeds of Table 1 train as one program) and this command has always done
that; --parallel=N (N > 1) asks for processes and so means --novmap. --backend=tpu defaults to
--novmap: one ssh command per run, each run synced to the bucket on its own, so a preempted
spot VM or a failed command costs that run only. A sweep of baselines only (no flow
to train) shares no program: --vmap then loads, scores and releases its runs one at a time.

Bad flags and bad configs, a workdir in use by another process (without --wait) and a full
disk print one line `error: ...` and exit 2; a non-finite loss exits 3; SIGTERM saves every
run's checkpoint at the next chunk end and exits 75 (rerun to resume); a failed run of
--novmap exits 1 after the others finished.
"""
import json
import logging
import os
import shlex
import sys
import time
from typing import List, Sequence

from cnf_jax.training import preemption
if __name__ == "__main__":
  # Before the imports below (jax: seconds): SIGTERM checkpoints every run at the next chunk end, exit 75.
  preemption.install()

from absl import flags
from absl import logging as absl_logging

from cnf_jax import cli
from cnf_jax import disk
from cnf_jax.errors import NonFiniteLossError, UserInputError
from cnf_jax.experiments import config_lib
from cnf_jax.experiments import launch

EXIT_NON_FINITE = 3


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("config", None, "Config file that declares sweep(add), e.g. configs/oneclass.py.",
                      flag_values=fv)
  flags.DEFINE_string("workdir", None, "Sweep root: run r writes <workdir>/<r.name> (gs://... for --backend=tpu).",
                      flag_values=fv)
  flags.DEFINE_string("arg", "", "Words added to every run's config arg, e.g. runlocal.", flag_values=fv)
  flags.DEFINE_multi_string("set", [], "KEY=VALUE set in every run's config: where the data is, which "
                            "methods or backbone to run (e.g. --set=data.features_root=/data/features "
                            "--set=methods=cf,flow); settings a sweep compares belong in its declared runs; "
                            "repeatable.", flag_values=fv)
  flags.DEFINE_list("runs", [], "Only these runs: names or shell patterns (cat-*, *eps=0*), comma-separated "
                    "(default: the whole sweep).", flag_values=fv)
  flags.DEFINE_enum("backend", "local", ["local", "tpu"], "Where to run: this machine or a Cloud TPU VM.",
                    flag_values=fv)
  flags.DEFINE_bool("vmap", None, "Train runs that differ only in seed / data.* / objective.eps as one vmapped "
                    "program (default: on for --backend=local unless --parallel > 1, off for tpu).", flag_values=fv)
  flags.DEFINE_integer("parallel", 1, "local, --novmap: how many runs at once (processes).", flag_values=fv)
  flags.DEFINE_bool("dry_run", False, "Print what would run (every command), run nothing.", flag_values=fv)
  flags.DEFINE_bool("rerun", False, "Also run the runs that already have results.json.", flag_values=fv)
  flags.DEFINE_bool("quiet", False, "No progress bars (for scripts); errors and the results still print.",
                    flag_values=fv)
  flags.DEFINE_bool("wait", False, "--vmap: wait for other processes that run in these workdirs instead of "
                    "exiting 2.", flag_values=fv)
  flags.DEFINE_string("python", sys.executable, "local, --novmap: the Python that runs each run.", flag_values=fv)
  # Cloud TPU.
  flags.DEFINE_string("tpu", "cnf-jax", "tpu: TPU VM name (created if it does not exist).", flag_values=fv)
  flags.DEFINE_string("zone", "us-central2-b", "tpu: zone, e.g. us-central2-b (v4), us-west4-a (v5e), "
                      "us-east5-b (v6e).", flag_values=fv)
  flags.DEFINE_string("project", "", "tpu: Google Cloud project (default: gcloud's configured one).", flag_values=fv)
  flags.DEFINE_string("accelerator_type", "v4-8", "tpu: TPU type, e.g. v4-8, v5litepod-8, v6e-8.", flag_values=fv)
  flags.DEFINE_string("runtime_version", "tpu-ubuntu2204-base", "tpu: TPU VM software version.", flag_values=fv)
  flags.DEFINE_bool("spot", False, "tpu: create a spot VM (cheaper, can be preempted; runs resume).", flag_values=fv)
  flags.DEFINE_string("tpu_pip", "jax[tpu]==0.10.2", "tpu: pip requirement that brings JAX for TPU.", flag_values=fv)
  flags.DEFINE_string("collect_to", "", "tpu: local directory the results are copied to "
                      "(default ./sweeps/<sweep name>).", flag_values=fv)


def use_vmap(fv: flags.FlagValues) -> bool:
  """--vmap as given, else the default of the module docstring."""
  if fv.parallel < 1:
    raise UserInputError(f"--parallel={fv.parallel} must be at least 1")
  if fv.vmap is None:
    return fv.backend == "local" and fv.parallel == 1
  if fv.vmap and fv.parallel > 1:
    raise UserInputError(f"--parallel={fv.parallel} starts one process per run; --vmap trains in one process "
                         "(drop one of them)")
  return fv.vmap


@cli.command
def main(argv: Sequence[str]) -> int:
  fv, _ = cli.parse(define_flags, argv, __doc__, required=("config", "workdir"))
  # Our progress at INFO; libraries (orbax logs every save) at WARNING.
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("cnf_jax").setLevel(logging.INFO)
  if fv.quiet:
    from cnf_jax.training import progress
    progress.set_quiet(True)
  spec = launch.SweepSpec(fv.config, fv.arg, tuple(fv.set), tuple(r for r in fv.runs if r))
  vmap = use_vmap(fv)
  if fv.backend == "tpu":
    launch.check_bucket(fv.workdir)
  runs = launch.declared_runs(spec)
  print(f"# sweep {spec.config}{':' + spec.arg if spec.arg else ''}: {len(runs)} runs", flush=True)
  if fv.backend == "tpu":
    return run_on_tpu(fv, spec, runs, vmap)
  return run_here(fv, spec, runs, vmap)


def run_here(fv: flags.FlagValues, spec: launch.SweepSpec, runs: List[config_lib.SweepRun], vmap: bool) -> int:
  root = os.path.abspath(os.path.expanduser(fv.workdir))
  todo = []
  for run in runs:
    if not fv.rerun and launch.is_finished(os.path.join(root, run.name)):
      print(f"[skip] {run.name}: finished ({os.path.join(root, run.name, 'results.json')})")
    else:
      todo.append(run)
  jobs = [] if vmap else launch.local_jobs(todo, spec, root, fv.python)
  if fv.dry_run:
    if vmap:
      print(f"# {len(todo)} runs to train in this process as vmapped programs:")
      print("\n".join(f"{r.name}: {os.path.join(root, r.name)}" for r in todo))
    else:
      print("\n".join(shlex.join(job.argv) for job in jobs))
    return 0
  launch.write_declaration(root, spec)
  if vmap:
    code = train_vmapped(spec, root, [r.name for r in todo], fv.wait)
  else:
    code = 1 if launch.run_local(jobs, fv.parallel) else 0
  from cnf_jax.reports import summary  # imported late: the report's plotting stays out of training
  print(summary.summary_text(root))
  return code


def train_vmapped(spec: launch.SweepSpec, root: str, names: List[str], wait: bool = False) -> int:
  """Trains the named runs with run_declared_sweep; prints one JSON line per run and one for the sweep."""
  if not names:
    print("nothing to train: every run has results.json (--rerun evaluates them again)")
    return 0
  from cnf_jax.experiments.sweep import run_declared_sweep  # imported late: jax loads only for real runs
  from cnf_jax.training import host_memory
  host_memory.configure()   # before any compiled step runs (see host_memory)
  start = time.perf_counter()
  from cnf_jax.training.checkpoints import quiet_orbax_after_failures
  quiet_orbax_after_failures()
  try:
    results = run_declared_sweep(spec.config, root, spec.arg, names, config_lib.parse_assignments(spec.settings),
                                 wait=wait)
  except NonFiniteLossError as e:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_NON_FINITE
  except preemption.Preempted as e:
    print(f"preempted: {e}", file=sys.stderr)
    return preemption.EXIT_PREEMPTED
  except Exception as e:
    if not disk.is_disk_full(e):
      raise
    raise UserInputError(f"no space left on the device ({getattr(e, 'filename', None) or root}); free some "
                         "space and rerun the same command (it resumes from the last checkpoints)") from None
  for name, r in results.items():
    print(json.dumps({"run": name, **{m: r[m] for m in ("auroc", "aupr", "fpr95") if m in r}}))
  print(json.dumps({"runs": len(results), "seconds": round(time.perf_counter() - start, 1)}), flush=True)
  return 0


def run_on_tpu(fv: flags.FlagValues, spec: launch.SweepSpec, runs: List[config_lib.SweepRun], vmap: bool) -> int:
  vm = launch.TpuVm(fv.tpu, fv.zone, fv.project, fv.accelerator_type, fv.runtime_version, fv.spot, fv.tpu_pip)
  if fv.dry_run:
    print(f"# is the VM there? (create it if not)\n{shlex.join(launch.describe_command(vm))}")
    create = True
  else:
    create = not launch.tpu_exists(vm)
  cmds = launch.tpu_commands(runs, spec, fv.workdir, vm, create=create, vmap=vmap, collect_to=fv.collect_to)
  return launch.run_commands(cmds, fv.dry_run)


if __name__ == "__main__":
  cli.run(main)
