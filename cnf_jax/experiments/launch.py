"""Where the runs of a declared sweep run: processes on this machine, or a Cloud TPU VM.

The library of `python -m cnf_jax.sweep` (its flags live there). It builds the
command line of every run (`python -m cnf_jax.main ... --workdir=<root>/<run name>`),
runs them N at a time as local processes, and builds the gcloud commands of a Cloud
TPU sweep (see launch/README.md). The vmapped sweep itself is
`cnf_jax.experiments.sweep.run_declared_sweep`.
"""
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from typing import List, Sequence, Tuple

from cnf_jax.errors import UserInputError
from cnf_jax.experiments import config_lib
from cnf_jax.files import atomic_write

Command = Tuple[str, List[str]]   # (what it does, argv)

# The directory that holds the cnf_jax package: child processes import the same code as this one.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class SweepSpec:
  """What to run: the config that declares the sweep, and what every run adds to it."""
  config: str                       # config file with sweep(add), e.g. configs/oneclass.py
  arg: str = ""                     # words added to every run's config arg, e.g. runlocal
  settings: Tuple[str, ...] = ()    # KEY=VALUE set in every run, e.g. data.features_root=/data
  only: Tuple[str, ...] = ()        # run names to keep; empty: the whole sweep


@dataclasses.dataclass(frozen=True)
class TpuVm:
  """The Cloud TPU VM of a sweep and where it lives."""
  name: str = "cnf-jax"
  zone: str = "us-central2-b"
  project: str = ""                 # empty: gcloud's configured project
  accelerator_type: str = "v4-8"
  runtime_version: str = "tpu-ubuntu2204-base"
  spot: bool = False
  pip: str = "jax[tpu]==0.10.2"     # the pip requirement that brings JAX for TPU


# --- What to run ---------------------------------------------------------------------------------

def declared_runs(spec: SweepSpec) -> List[config_lib.SweepRun]:
  """The runs of the sweep (checked: each config builds, takes the settings and validates)."""
  from cnf_jax.experiments import sweep
  runs, configs = sweep.declared_configs(spec.config, spec.arg, spec.only, config_lib.parse_assignments(spec.settings))
  for c in configs:
    config_lib.validate(c)
  return runs


def write_declaration(root: str, spec: SweepSpec) -> None:
  """<root>/sweep.json: every run the config declares, so that the report can name those never launched."""
  from cnf_jax.reports import tables
  names = [r.name for r in config_lib.declared_sweep(config_lib.load_config_module(spec.config), spec.config)]
  os.makedirs(root, exist_ok=True)
  path = os.path.join(root, tables.SWEEP_FILE)
  # A temporary file per process: benchmarks/gpu/*.sh run one sweep process per seed on one root.
  with atomic_write(path, suffix=f".{os.getpid()}") as f:
    json.dump({"config": spec.config, "arg": spec.arg, "runs": names}, f, indent=1)


def is_finished(workdir: str) -> bool:
  """results.json is written last (atomically): its presence means the run finished."""
  return os.path.isfile(os.path.join(workdir, "results.json"))


def main_argv(run: config_lib.SweepRun, spec: SweepSpec, workdir: str, python: str = "python") -> List[str]:
  """argv of one run: python -m cnf_jax.main --config=... [--config.k=v ...] --workdir=..."""
  extra = [f"--config.{k}={v}" for k, v in config_lib.parse_assignments(spec.settings).items()]
  return [python, "-m", "cnf_jax.main", *run.flags(spec.config, spec.arg), *extra, f"--workdir={workdir}"]


def vmap_argv(spec: SweepSpec, workdir: str, python: str = "python") -> List[str]:
  """argv of the whole sweep as vmapped programs in one process: python -m cnf_jax.sweep --vmap ..."""
  argv = [python, "-m", "cnf_jax.sweep", f"--config={spec.config}", f"--workdir={workdir}", "--vmap"]
  argv += [f"--arg={spec.arg}"] if spec.arg else []
  argv += [f"--set={s}" for s in spec.settings]
  argv += [f"--runs={','.join(spec.only)}"] if spec.only else []
  return argv


# --- Local processes -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Job:
  name: str          # the run name
  argv: List[str]
  workdir: str


def local_jobs(runs: Sequence[config_lib.SweepRun], spec: SweepSpec, root: str, python: str) -> List[Job]:
  """One cnf_jax.main process per run, writing <root>/<run name>."""
  return [Job(r.name, main_argv(r, spec, os.path.join(root, r.name), python), os.path.join(root, r.name))
          for r in runs]


def run_local(jobs: Sequence[Job], parallel: int) -> int:
  """Runs the jobs, `parallel` at a time; each logs to <workdir>/launch.log. Returns how many failed.

  The processes start in this process's working directory (relative config paths mean
  the same to them) with PYTHONPATH led by PACKAGE_PARENT.
  """
  env = dict(os.environ)
  env["PYTHONPATH"] = PACKAGE_PARENT + os.pathsep + env.get("PYTHONPATH", "")
  pending, running, failed = list(jobs), [], 0
  while pending or running:
    while pending and len(running) < parallel:
      job = pending.pop(0)
      os.makedirs(job.workdir, exist_ok=True)
      log = open(os.path.join(job.workdir, "launch.log"), "a")
      print(f"[start] {job.name}: {shlex.join(job.argv)}", flush=True)
      proc = subprocess.Popen(job.argv, env=env, stdout=log, stderr=subprocess.STDOUT)
      running.append((job, proc, log, time.perf_counter()))
    for entry in list(running):
      job, proc, log, start = entry
      if proc.poll() is None:
        continue
      log.close()
      running.remove(entry)
      seconds = time.perf_counter() - start
      if proc.returncode == 0:
        print(f"[done] {job.name} ({seconds:.0f} s)", flush=True)
      else:
        failed += 1
        with open(os.path.join(job.workdir, "launch.log")) as f:
          tail = f.read().strip().splitlines()[-1:]
        print(f"[failed] {job.name} (exit {proc.returncode}): {tail[0] if tail else ''} "
              f"(log: {job.workdir}/launch.log)", flush=True)
    time.sleep(0.2)
  return failed


# --- Cloud TPU -----------------------------------------------------------------------------------

def gcloud(vm: TpuVm, *args: str) -> List[str]:
  """gcloud compute tpus tpu-vm ARGS --zone=... [--project=...]"""
  location = [f"--zone={vm.zone}"] + ([f"--project={vm.project}"] if vm.project else [])
  return ["gcloud", "compute", "tpus", "tpu-vm", *args, *location]


def describe_command(vm: TpuVm) -> List[str]:
  """Succeeds if and only if the VM exists."""
  return gcloud(vm, "describe", vm.name, "--format=value(state)")


def tpu_exists(vm: TpuVm) -> bool:
  return subprocess.run(describe_command(vm), capture_output=True).returncode == 0


def check_bucket(bucket_root: str) -> None:
  """A Cloud TPU sweep's root must be a bucket: run workdirs are synced there to survive preemption."""
  if not bucket_root.startswith("gs://"):
    raise UserInputError(f"--backend=tpu needs --workdir on a bucket (gs://bucket/path), got {bucket_root!r}; "
                         "run workdirs are synced there so they survive preemption")


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


def tpu_commands(runs: Sequence[config_lib.SweepRun], spec: SweepSpec, bucket_root: str, vm: TpuVm, *,
                 create: bool, vmap: bool, collect_to: str = "") -> List[Command]:
  """Every command of a Cloud TPU sweep, in order: VM, code, install, runs, collect, report.

  collect_to: the local directory the results are copied to (default sweeps/<sweep name>).
  """
  check_bucket(bucket_root)
  sweep_name = bucket_root.rstrip("/").rsplit("/", 1)[-1]
  archive = "/tmp/cnf_jax-src.tar.gz"
  remote_root = f"../cnf_runs/{sweep_name}"   # relative to ~/cnf_jax, where every remote command starts
  cmds: List[Command] = []
  if create:
    create_argv = gcloud(vm, "create", vm.name, f"--accelerator-type={vm.accelerator_type}",
                         f"--version={vm.runtime_version}")
    cmds.append(("create the TPU VM", create_argv + (["--spot"] if vm.spot else [])))
  cmds.append(("package the committed code", ["git", "archive", "--format=tar.gz", "-o", archive, "HEAD"]))
  cmds.append(("copy it to every worker", gcloud(vm, "scp", archive, f"{vm.name}:~/", "--worker=all")))
  install = ("rm -rf ~/cnf_jax && mkdir ~/cnf_jax && tar xzf ~/cnf_jax-src.tar.gz -C ~/cnf_jax && "
             f"cd ~/cnf_jax && pip install -q -e . {shlex.quote(vm.pip)}")
  cmds.append(("install on every worker", gcloud(vm, "ssh", vm.name, "--worker=all", f"--command={install}")))
  if vmap:
    remote = f"cd ~/cnf_jax && {synced_run(vmap_argv(spec, remote_root, 'python3'), remote_root, bucket_root)}"
    cmds.append(("run the sweep as vmapped programs",
                 gcloud(vm, "ssh", vm.name, "--worker=all", f"--command={remote}")))
  else:
    for run in runs:
      local_dir, bucket_dir = f"{remote_root}/{run.name}", f"{bucket_root.rstrip('/')}/{run.name}"
      remote = f"cd ~/cnf_jax && {synced_run(main_argv(run, spec, local_dir, 'python3'), local_dir, bucket_dir)}"
      cmds.append((f"run {run.name}", gcloud(vm, "ssh", vm.name, "--worker=all", f"--command={remote}")))
  collect_to = collect_to or os.path.join("sweeps", sweep_name)
  cmds.append(("collect results (no checkpoints)",
               ["gcloud", "storage", "rsync", "-r", "--exclude=.*/checkpoints/.*", bucket_root, collect_to]))
  cmds.append(("print the table", ["python", "-m", "cnf_jax.report", f"--workdir={collect_to}"]))
  return cmds


def run_commands(cmds: Sequence[Command], dry_run: bool) -> int:
  """Prints each command (`# what`, then the command line) and runs it; stops at the first failure."""
  for what, argv in cmds:
    print(f"# {what}\n{shlex.join(argv)}", flush=True)
    if not dry_run:
      rc = subprocess.run(argv).returncode
      if rc:
        print(f"error: '{what}' failed with exit code {rc}; rerun the same command to continue "
              "(the runs resume from their checkpoints in the bucket)", file=sys.stderr)
        return rc
  return 0
