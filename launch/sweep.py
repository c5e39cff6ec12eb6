"""Runs the sweep declared next to a config, here or on a Cloud TPU VM.

  # locally, one run after another (each run: python -m cnf_jax.main, workdir <root>/<run name>)
  python -m launch.sweep --config=configs/oneclass.py --workdir=/tmp/cnf/table
  # smoke test of the same sweep, 2 processes at once
  python -m launch.sweep --config=configs/oneclass.py --arg=runlocal --workdir=/tmp/cnf/table_local --parallel=2
  # runs that differ only in seed / data trained as one vmapped program (python -m cnf_jax.sweep)
  python -m launch.sweep --config=configs/oneclass.py --workdir=/tmp/cnf/table --vmap
  # Cloud TPU: print every gcloud command (drop --dry_run to run them)
  python -m launch.sweep --config=configs/oneclass.py --backend=tpu --workdir=gs://my-bucket/cnf/table \
      --tpu=cnf-v5e --zone=us-west4-a --project=my-project --accelerator_type=v5litepod-8 --spot --dry_run
  # then: the table
  python -m launch.report --workdir=/tmp/cnf/table

Hyper-parameters live in the config's sweep(add) (classes x seeds x settings);
the launcher only adds where and how to run. `--set=KEY=VALUE` sets a key in
every run (paths, not hyper-parameters: e.g. data.features_root). Finished runs
(results.json present) are skipped; interrupted ones resume from their latest
checkpoint. See launch/README.md for the Cloud TPU flow.
"""
import json
import os
import shlex
import subprocess
import sys
import time
from typing import List, Optional, Sequence, Tuple

from absl import app
from absl import flags

from cnf_jax.experiments import config_lib
from cnf_jax.errors import UserInputError

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Config file with a sweep(add) function, e.g. configs/oneclass.py.")
flags.DEFINE_string("arg", "", "Words added to every run's config arg, e.g. runlocal.")
flags.DEFINE_string("workdir", None, "Sweep root: run r writes <workdir>/<r.name> (gs://... for --backend=tpu).")
flags.DEFINE_multi_string("set", [], "KEY=VALUE set in every run, e.g. --set=data.features_root=/data/features.")
flags.DEFINE_list("runs", [], "Only these run names (default: the whole sweep).")
flags.DEFINE_enum("backend", "local", ["local", "tpu"], "Where to run.")
flags.DEFINE_integer("parallel", 1, "local: how many runs at once (processes).")
flags.DEFINE_bool("vmap", False, "Train runs that differ only in seed/data as one vmapped program.")
flags.DEFINE_bool("dry_run", False, "Print every command, run none.")
flags.DEFINE_bool("rerun", False, "Also run the runs that already have results.json.")
flags.DEFINE_string("python", sys.executable, "Python that runs the jobs (local backend).")
# Cloud TPU.
flags.DEFINE_string("tpu", "cnf-jax", "TPU VM name (created if it does not exist).")
flags.DEFINE_string("zone", "us-central2-b", "TPU zone, e.g. us-central2-b (v4), us-west4-a (v5e), us-east5-b (v6e).")
flags.DEFINE_string("project", "", "Google Cloud project (default: gcloud's configured one).")
flags.DEFINE_string("accelerator_type", "v4-8", "TPU type, e.g. v4-8, v5litepod-8, v6e-8.")
flags.DEFINE_string("runtime_version", "tpu-ubuntu2204-base", "TPU VM software version.")
flags.DEFINE_bool("spot", False, "Create a spot TPU VM (cheaper, can be preempted; runs resume).")
flags.DEFINE_string("tpu_pip", "jax[tpu]==0.10.2", "pip requirement that brings JAX for TPU.")
flags.DEFINE_string("collect_to", "", "tpu: local directory the results are copied to (default ./sweeps/<name>).")

Command = Tuple[str, List[str]]   # (what it does, argv)


# --- What to run ---------------------------------------------------------------------------------

def sweep_runs(config_path: str, extra_arg: str, only: Sequence[str]) -> List[config_lib.SweepRun]:
  """The declared runs (checked: each config builds and validates)."""
  from cnf_jax.experiments import sweep as cnf_sweep
  runs, configs = cnf_sweep.declared_configs(config_path, extra_arg, only, config_lib.parse_assignments(FLAGS.set))
  for c in configs:
    config_lib.validate(c)
  return runs


def write_declaration(root: str, config_path: str, extra_arg: str) -> None:
  """<root>/sweep.json: every run the config declares, so that the report can name those never launched."""
  from cnf_jax.reports import tables
  names = [r.name for r in config_lib.declared_sweep(config_lib.load_config_module(config_path), config_path)]
  os.makedirs(root, exist_ok=True)
  path = os.path.join(root, tables.SWEEP_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump({"config": config_path, "arg": extra_arg, "runs": names}, f, indent=1)
  os.replace(path + ".tmp", path)


def main_argv(run: config_lib.SweepRun, config_path: str, extra_arg: str, settings: Sequence[str],
              workdir: str, python: str = "python") -> List[str]:
  """argv of one run: python -m cnf_jax.main --config=... [--config.k=v ...] --workdir=..."""
  extra = [f"--config.{k}={v}" for k, v in config_lib.parse_assignments(settings).items()]
  return [python, "-m", "cnf_jax.main", *run.flags(config_path, extra_arg), *extra, f"--workdir={workdir}"]


def vmap_argv(config_path: str, extra_arg: str, settings: Sequence[str], workdir: str,
              only: Sequence[str], python: str = "python") -> List[str]:
  """argv of the whole sweep as vmapped programs: python -m cnf_jax.sweep ..."""
  argv = [python, "-m", "cnf_jax.experiments.sweep", f"--config={config_path}", f"--workdir={workdir}"]
  argv += [f"--arg={extra_arg}"] if extra_arg else []
  argv += [f"--set={s}" for s in settings]
  argv += [f"--runs={','.join(only)}"] if only else []
  return argv


# --- Local backend -------------------------------------------------------------------------------

def local_commands(runs, root: str) -> List[Tuple[str, List[str], str]]:
  """(run name, argv, workdir) of the runs still to do (all with --rerun)."""
  out = []
  for run in runs:
    workdir = os.path.join(root, run.name)
    if not FLAGS.rerun and os.path.isfile(os.path.join(workdir, "results.json")):
      print(f"[skip] {run.name}: finished ({workdir}/results.json)")
      continue
    out.append((run.name, main_argv(run, FLAGS.config, FLAGS.arg, FLAGS.set, workdir, FLAGS.python), workdir))
  return out


def run_local(jobs, parallel: int) -> int:
  """Runs the jobs, `parallel` at a time; each logs to <workdir>/launch.log. Returns the number failed."""
  env = dict(os.environ)
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
  pending, running, failed = list(jobs), [], 0
  while pending or running:
    while pending and len(running) < parallel:
      name, argv, workdir = pending.pop(0)
      os.makedirs(workdir, exist_ok=True)
      log = open(os.path.join(workdir, "launch.log"), "a")
      print(f"[start] {name}: {shlex.join(argv)}", flush=True)
      running.append((name, subprocess.Popen(argv, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT),
                      log, time.perf_counter(), workdir))
    for job in list(running):
      name, proc, log, start, workdir = job
      if proc.poll() is None:
        continue
      log.close()
      running.remove(job)
      seconds = time.perf_counter() - start
      if proc.returncode == 0:
        print(f"[done] {name} ({seconds:.0f} s)", flush=True)
      else:
        failed += 1
        tail = open(os.path.join(workdir, "launch.log")).read().strip().splitlines()[-1:]
        print(f"[failed] {name} (exit {proc.returncode}): {tail[0] if tail else ''} "
              f"(log: {workdir}/launch.log)", flush=True)
    time.sleep(0.2)
  return failed


# --- Cloud TPU backend ---------------------------------------------------------------------------

def _gcloud(*args: str) -> List[str]:
  location = [f"--zone={FLAGS.zone}"] + ([f"--project={FLAGS.project}"] if FLAGS.project else [])
  return ["gcloud", "compute", "tpus", "tpu-vm", *args, *location]


def synced_run(argv: Sequence[str], local_dir: str, bucket_dir: str, sync_every_s: int = 120) -> str:
  """A shell command for a TPU worker: pull the run's workdir from the bucket, run, push it back.

  The workdir lives on the VM's disk (the code writes plain files); it is copied
  to the bucket every `sync_every_s` seconds and at the end, so a preempted spot
  VM loses at most that much, and a rerun pulls the latest checkpoint and resumes.
  """
  q = shlex.quote
  pull = f"gcloud storage rsync -r {q(bucket_dir)} {q(local_dir)}"
  push = f"gcloud storage rsync -r {q(local_dir)} {q(bucket_dir)}"
  return (f"mkdir -p {q(local_dir)} && ({pull} 2>/dev/null || true) && "
          f"{{ (while sleep {sync_every_s}; do {push} >/dev/null 2>&1; done) & SYNC=$!; "
          f"{shlex.join(argv)}; RC=$?; kill $SYNC; {push}; exit $RC; }}")


def tpu_commands(runs, bucket_root: str, create: bool) -> List[Command]:
  """Every command of a Cloud TPU sweep, in order: VM, code, install, runs, collect."""
  if not bucket_root.startswith("gs://"):
    raise UserInputError(f"--backend=tpu needs --workdir on a bucket (gs://bucket/path), got {bucket_root!r}; "
                         "run workdirs are synced there so they survive preemption")
  sweep_name = bucket_root.rstrip("/").rsplit("/", 1)[-1]
  archive = "/tmp/cnf_jax-src.tar.gz"
  remote_root = f"../cnf_runs/{sweep_name}"   # relative to ~/cnf_jax, where every remote command starts
  cmds: List[Command] = []
  if create:
    create_argv = _gcloud("create", FLAGS.tpu, f"--accelerator-type={FLAGS.accelerator_type}",
                          f"--version={FLAGS.runtime_version}")
    cmds.append(("create the TPU VM", create_argv + (["--spot"] if FLAGS.spot else [])))
  cmds.append(("package the committed code", ["git", "archive", "--format=tar.gz", "-o", archive, "HEAD"]))
  cmds.append(("copy it to every worker", _gcloud("scp", archive, f"{FLAGS.tpu}:~/", "--worker=all")))
  install = ("rm -rf ~/cnf_jax && mkdir ~/cnf_jax && tar xzf ~/cnf_jax-src.tar.gz -C ~/cnf_jax && "
             f"cd ~/cnf_jax && pip install -q -e . {shlex.quote(FLAGS.tpu_pip)}")
  cmds.append(("install on every worker", _gcloud("ssh", FLAGS.tpu, "--worker=all", f"--command={install}")))
  if FLAGS.vmap:
    argv = vmap_argv(FLAGS.config, FLAGS.arg, FLAGS.set, remote_root, FLAGS.runs, "python3")
    remote = f"cd ~/cnf_jax && {synced_run(argv, remote_root, bucket_root)}"
    cmds.append(("run the sweep as vmapped programs", _gcloud("ssh", FLAGS.tpu, "--worker=all", f"--command={remote}")))
  else:
    for run in runs:
      local_dir, bucket_dir = f"{remote_root}/{run.name}", f"{bucket_root.rstrip('/')}/{run.name}"
      argv = main_argv(run, FLAGS.config, FLAGS.arg, FLAGS.set, local_dir, "python3")
      remote = f"cd ~/cnf_jax && {synced_run(argv, local_dir, bucket_dir)}"
      cmds.append((f"run {run.name}", _gcloud("ssh", FLAGS.tpu, "--worker=all", f"--command={remote}")))
  collect_to = FLAGS.collect_to or os.path.join("sweeps", sweep_name)
  cmds.append(("collect results (no checkpoints)",
               ["gcloud", "storage", "rsync", "-r", "--exclude=.*/checkpoints/.*", bucket_root, collect_to]))
  cmds.append(("print the table", ["python", "-m", "launch.report", f"--workdir={collect_to}"]))
  return cmds


def tpu_exists() -> bool:
  describe = _gcloud("describe", FLAGS.tpu, "--format=value(state)")
  if FLAGS.dry_run:
    print(f"# is the VM there? (create it if not)\n{shlex.join(describe)}")
    return False
  return subprocess.run(describe, capture_output=True).returncode == 0


def run_commands(cmds: Sequence[Command]) -> int:
  for what, argv in cmds:
    print(f"# {what}\n{shlex.join(argv)}", flush=True)
    if not FLAGS.dry_run:
      rc = subprocess.run(argv).returncode
      if rc:
        print(f"error: '{what}' failed with exit code {rc}; rerun the launcher to continue "
              "(finished runs are skipped only locally; remote runs resume from their checkpoints)", file=sys.stderr)
        return rc
  return 0


def main(argv):
  del argv
  if not FLAGS.config or not FLAGS.workdir:
    print("error: --config (a config file with sweep()) and --workdir (the sweep root) are required", file=sys.stderr)
    sys.exit(2)
  try:
    runs = sweep_runs(FLAGS.config, FLAGS.arg, FLAGS.runs)
    print(f"# sweep {FLAGS.config}{':' + FLAGS.arg if FLAGS.arg else ''}: {len(runs)} runs", flush=True)
    if FLAGS.backend == "tpu":
      sys.exit(run_commands(tpu_commands(runs, FLAGS.workdir, create=not tpu_exists())))
    root = os.path.abspath(os.path.expanduser(FLAGS.workdir))
    if FLAGS.vmap:
      jobs = [("vmapped sweep", vmap_argv(FLAGS.config, FLAGS.arg, FLAGS.set, root, FLAGS.runs, FLAGS.python), root)]
    else:
      jobs = local_commands(runs, root)
    if FLAGS.dry_run:
      for _, argv, _ in jobs:
        print(shlex.join(argv))
      return
    write_declaration(root, FLAGS.config, FLAGS.arg)
    failed = run_local(jobs, max(1, FLAGS.parallel))
  except UserInputError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  from cnf_jax.reports import summary
  print(summary.summary_text(root))
  sys.exit(1 if failed else 0)


if __name__ == "__main__":
  app.run(main)
