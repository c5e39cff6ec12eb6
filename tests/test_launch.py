"""python -m cnf_jax.sweep: local sweeps (processes and vmapped), the report over them, Cloud TPU dry runs."""
import json
import os
import shlex
import subprocess
import sys

import pytest

from cnf_jax import sweep as sweep_cli
from cli_util import ROOT, subprocess_env

# Two runs of the toy's sweep with a baseline only: every path of the CLI, and nothing to compile.
TOY = ("--config=configs/toy2d.py", "--arg=runlocal", "--set=methods=knn")


def _sweep(*args, module="cnf_jax.sweep", timeout=600):
  env = subprocess_env()
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)


@pytest.fixture
def in_repo(monkeypatch):
  """In-process calls resolve configs/... from the repository root, as the subprocesses do."""
  monkeypatch.chdir(ROOT)


def _results(root, seed):
  return json.loads((root / f"seed={seed}" / "results.json").read_text())


def test_processes_two_at_a_time_skip_finished_runs_and_end_with_the_table(tmp_path, capsys, in_repo):
  root = tmp_path / "sweep"
  args = (*TOY, f"--workdir={root}", "--runs=seed=0,seed=1", "--parallel=2")   # --parallel=2: processes
  proc = _sweep(*args)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert proc.stdout.count("[done]") == 2 and proc.stdout.count("-m cnf_jax.main --config=configs/toy2d.py") == 2
  for seed in (0, 1):
    assert json.loads((root / f"seed={seed}" / "config.json").read_text())["seed"] == seed
    assert set(_results(root, seed)["auroc"]) == {"knn"}
    assert (root / f"seed={seed}" / "launch.log").exists()
  assert "| KNN |" in proc.stdout and "| default |" in proc.stdout   # it ends with the table
  # The declaration is kept beside the runs, so that the report can name runs never launched (seed=2).
  assert json.loads((root / "sweep.json").read_text())["runs"] == ["seed=0", "seed=1", "seed=2"]
  assert "run seed=2: never launched" in proc.stdout

  report = _sweep(f"--workdir={root}", "--json", module="cnf_jax.report")
  assert report.returncode == 0, report.stderr[-2000:]
  summary = json.loads(report.stdout)
  assert summary["runs"] == {"done": 2, "running": 0, "empty": 0}
  knn = summary["auroc"]["default"]["knn"]
  assert knn["n"] == 2 and abs(knn["mean"] - sum(_results(root, s)["auroc"]["knn"] for s in (0, 1)) / 2) < 1e-9

  assert sweep_cli.main(args) == 0   # finished runs are skipped, not rerun
  again = capsys.readouterr().out
  assert again.count("[skip]") == 2 and "[start]" not in again and "| KNN |" in again


def test_old_names_are_the_new_commands():
  for module, args, message in [("launch.sweep", ["--workdir=/tmp/x"], "error: --config is required"),
                                ("launch.report", ["--bogus"], "error: Unknown command line flag 'bogus'")]:
    proc = _sweep(*args, module=module)
    assert proc.returncode == 2 and proc.stderr.startswith(message), (module, proc.stderr[-2000:])


def test_vmapped_in_this_process_by_default(tmp_path, capsys, in_repo):
  root = tmp_path / "sweep"
  proc = _sweep(*TOY, f"--workdir={root}", "--runs=seed=0,seed=1")
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
  assert lines[:2] == [{"run": f"seed={s}", **{m: _results(root, s)[m] for m in ("auroc", "aupr", "fpr95")}}
                       for s in (0, 1)]
  assert lines[2]["runs"] == 2
  assert "[start]" not in proc.stdout and not (root / "seed=0" / "launch.log").exists()   # no processes
  assert "| KNN |" in proc.stdout

  # What a rerun would train: the finished run is skipped, unless --rerun.
  args = [*TOY, f"--workdir={root}", "--runs=seed=0,seed=2", "--dry_run"]
  assert sweep_cli.main(args) == 0
  out = capsys.readouterr().out
  assert "[skip] seed=0: finished" in out and "# 1 runs to train in this process as vmapped programs:" in out
  assert out.strip().splitlines()[-1] == f"seed=2: {root / 'seed=2'}" and not (root / "seed=2").exists()
  assert sweep_cli.main(args + ["--rerun"]) == 0
  assert "# 2 runs to train" in capsys.readouterr().out


def _commands(stdout):
  """(comment, argv) pairs of a dry run's output."""
  lines = [l for l in stdout.splitlines() if l.strip()]
  return [(lines[i][2:], shlex.split(lines[i + 1])) for i in range(len(lines) - 1)
          if lines[i].startswith("# ") and not lines[i + 1].startswith("#")]


TPU = ("--config=configs/oneclass.py", "--backend=tpu", "--workdir=gs://my-bucket/cnf/table", "--tpu=cnf-v5e",
       "--zone=us-west4-a", "--project=my-proj", "--accelerator_type=v5litepod-8", "--spot", "--dry_run")


def test_tpu_dry_run_prints_every_command(capsys, in_repo):
  assert sweep_cli.main(TPU) == 0
  stdout = capsys.readouterr().out
  cmds = dict(_commands(stdout))
  location = ["--zone=us-west4-a", "--project=my-proj"]
  assert cmds["is the VM there? (create it if not)"][:6] == ["gcloud", "compute", "tpus", "tpu-vm", "describe",
                                                            "cnf-v5e"]
  assert cmds["create the TPU VM"] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "cnf-v5e",
                                       "--accelerator-type=v5litepod-8", "--version=tpu-ubuntu2204-base",
                                       *location, "--spot"]
  assert cmds["copy it to every worker"][4:] == ["scp", "/tmp/cnf_jax-src.tar.gz", "cnf-v5e:~/", "--worker=all",
                                                 *location]
  assert "pip install -q -e . 'jax[tpu]==0.10.2'" in cmds["install on every worker"][7]
  runs = [c for what, c in _commands(stdout) if what.startswith("run ")]
  assert len(runs) == 30   # 10 classes x 3 seeds, one ssh command each on every worker (tpu: --novmap)
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
  assert cmds["print the table"] == ["python", "-m", "cnf_jax.report", "--workdir=sweeps/table"]

  # --vmap: the whole sweep as one remote cnf_jax.sweep, its root synced as one directory.
  assert sweep_cli.main([*TPU, "--vmap", "--arg=runlocal"]) == 0
  cmds = _commands(capsys.readouterr().out)
  assert "run deer-seed=2" not in dict(cmds) and len(cmds) == 8
  remote = dict(cmds)["run the sweep as vmapped programs"][7]
  assert ("python3 -m cnf_jax.sweep --config=configs/oneclass.py --workdir=../cnf_runs/table --vmap "
          "--arg=runlocal;") in remote
  assert "rsync -r gs://my-bucket/cnf/table ../cnf_runs/table" in remote


def test_process_dry_run_and_bad_input(capsys, in_repo):
  assert sweep_cli.main(["--config=configs/oneclass.py", "--arg=runlocal", "--workdir=/tmp/x", "--novmap",
                         "--set=data.features_root=/data/f", "--runs=deer-seed=2", "--dry_run",
                         "--python=py"]) == 0
  assert capsys.readouterr().out.strip().splitlines()[-1].split() == [
      "py", "-m", "cnf_jax.main", "--config=configs/oneclass.py:deer,runlocal", "--config.seed=2",
      "--config.data.features_root=/data/f", "--workdir=/tmp/x/deer-seed=2"]
  # Shell patterns pick runs too: the three seeds of deer and of dog, in the sweep's order.
  assert sweep_cli.main(["--config=configs/oneclass.py", "--workdir=/tmp/x", "--novmap", "--dry_run",
                         "--runs=deer-*,dog-seed=[0-9]", "--python=py"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  picked = [l.split("--workdir=/tmp/x/")[1] for l in lines if l.startswith("py -m cnf_jax.main")]
  assert picked == [f"{c}-seed={s}" for s in range(3) for c in ("deer", "dog")]
  toy = ["--config=configs/toy2d.py", "--workdir=/tmp/x", "--dry_run"]
  for args, message in [
      (["--backend=tpu", "--config=configs/toy2d.py", "--workdir=/local/path"], "needs --workdir on a bucket (gs://"),
      ([*toy, "--runs=seed=7"], "unknown run(s) seed=7"),
      (["--workdir=/tmp/x"], "--config is required"),
      ([*toy, "--bogus"], "Unknown command line flag 'bogus'"),
      ([*toy, "--backend=gpu"], "flag --backend=gpu: value should be one of <local|tpu>"),
      ([*toy, "--vmap", "--parallel=2"], "--parallel=2 starts one process per run"),
      ([*toy, "extra"], "unexpected argument(s) extra"),
      ([*toy, "--set=seed"], "--set 'seed' is not KEY=VALUE")]:
    assert sweep_cli.main(args) == 2, args
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, (args, err)
  with pytest.raises(SystemExit) as e:
    sweep_cli.main([*toy, "--help"])
  assert e.value.code == 0 and "--[no]vmap: Train runs that differ only in seed" in capsys.readouterr().out
