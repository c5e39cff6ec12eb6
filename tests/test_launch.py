"""The sweep launcher: a local sweep of runlocal configs, the report over it, the Cloud TPU dry run."""
import json
import os
import shlex
import subprocess
import sys

from cli_util import ROOT


def _launch(*args, module="launch.sweep", timeout=600):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)


def test_local_sweep_runs_two_processes_and_the_report_reads_it(tmp_path):
  root = tmp_path / "sweep"
  args = ("--config=configs/toy2d.py", "--arg=runlocal", f"--workdir={root}", "--runs=seed=0,seed=1",
          "--parallel=2")
  proc = _launch(*args)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert proc.stdout.count("[done]") == 2
  for seed in (0, 1):
    results = json.loads((root / f"seed={seed}" / "results.json").read_text())
    assert json.loads((root / f"seed={seed}" / "config.json").read_text())["seed"] == seed
    assert set(results["auroc"]) == {"cf", "flow", "flow_ratio"}
  assert "| default |" in proc.stdout   # the launcher ends with the table
  # The declaration is kept beside the runs, so that the report can name runs never launched (seed=2).
  assert json.loads((root / "sweep.json").read_text())["runs"] == ["seed=0", "seed=1", "seed=2"]
  assert "run seed=2: never launched" in proc.stdout

  report = _launch(f"--workdir={root}", "--json", module="launch.report")
  assert report.returncode == 0, report.stderr[-2000:]
  summary = json.loads(report.stdout)
  assert summary["runs"] == {"done": 2, "running": 0, "empty": 0}
  cf = summary["auroc"]["default"]["cf"]
  aurocs = [json.loads((root / f"seed={s}" / "results.json").read_text())["auroc"]["cf"] for s in (0, 1)]
  assert cf["n"] == 2 and abs(cf["mean"] - sum(aurocs) / 2) < 1e-9

  again = _launch(*args)   # finished runs are skipped, not retrained
  assert again.returncode == 0 and again.stdout.count("[skip]") == 2 and "[start]" not in again.stdout


def _commands(stdout):
  """(comment, argv) pairs of a dry run's output."""
  lines = [l for l in stdout.splitlines() if l.strip()]
  return [(lines[i][2:], shlex.split(lines[i + 1])) for i in range(len(lines) - 1)
          if lines[i].startswith("# ") and not lines[i + 1].startswith("#")]


def test_tpu_dry_run_prints_every_command():
  proc = _launch("--config=configs/oneclass.py", "--backend=tpu", "--workdir=gs://my-bucket/cnf/table",
                 "--tpu=cnf-v5e", "--zone=us-west4-a", "--project=my-proj", "--accelerator_type=v5litepod-8",
                 "--spot", "--dry_run")
  assert proc.returncode == 0, proc.stderr[-2000:]
  cmds = dict(_commands(proc.stdout))
  location = ["--zone=us-west4-a", "--project=my-proj"]
  assert cmds["is the VM there? (create it if not)"][:6] == ["gcloud", "compute", "tpus", "tpu-vm", "describe",
                                                            "cnf-v5e"]
  assert cmds["create the TPU VM"] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "cnf-v5e",
                                       "--accelerator-type=v5litepod-8", "--version=tpu-ubuntu2204-base",
                                       *location, "--spot"]
  assert cmds["copy it to every worker"][4:] == ["scp", "/tmp/cnf_jax-src.tar.gz", "cnf-v5e:~/", "--worker=all",
                                                 *location]
  assert "pip install -q -e . 'jax[tpu]==0.10.2'" in cmds["install on every worker"][7]
  runs = [c for what, c in _commands(proc.stdout) if what.startswith("run ")]
  assert len(runs) == 30   # 10 classes x 3 seeds, one ssh command each on every worker
  deer = cmds["run deer-seed=2"]
  assert deer[4:7] == ["ssh", "cnf-v5e", "--worker=all"]
  remote = deer[7]
  assert remote.startswith("--command=cd ~/cnf_jax && ")
  assert ("python3 -m cnf_jax.main --config=configs/oneclass.py:deer --config.seed=2 "
          "--workdir=../cnf_runs/table/deer-seed=2") in remote
  # Pulled from the bucket before (resume after preemption) and pushed back after.
  assert remote.index("rsync -r gs://my-bucket/cnf/table/deer-seed=2 ../cnf_runs/table/deer-seed=2") < \
      remote.index("cnf_jax.main") < remote.rindex("rsync -r ../cnf_runs/table/deer-seed=2 gs://my-bucket/cnf/table/deer-seed=2")
  assert cmds["collect results (no checkpoints)"][-2:] == ["gs://my-bucket/cnf/table", "sweeps/table"]
  assert cmds["print the table"] == ["python", "-m", "launch.report", "--workdir=sweeps/table"]


def test_vmap_dry_runs_and_bad_input():
  local = _launch("--config=configs/oneclass.py", "--arg=runlocal", "--workdir=/tmp/x", "--vmap", "--dry_run",
                  "--set=data.features_root=/data/f")
  assert local.returncode == 0, local.stderr[-2000:]
  assert local.stdout.strip().splitlines()[-1].split()[1:] == [
      "-m", "cnf_jax.experiments.sweep", "--config=configs/oneclass.py", "--workdir=/tmp/x", "--arg=runlocal",
      "--set=data.features_root=/data/f"]
  tpu = _launch("--config=configs/toy2d.py", "--backend=tpu", "--workdir=/local/path", "--dry_run")
  assert tpu.returncode == 2 and "needs --workdir on a bucket (gs://" in tpu.stderr
  bad = _launch("--config=configs/toy2d.py", "--workdir=/tmp/x", "--runs=seed=7", "--dry_run")
  assert bad.returncode == 2 and "unknown run(s) seed=7" in bad.stderr
