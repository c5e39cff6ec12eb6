"""Interrupted runs resume without losing or changing results; a non-finite loss stops loudly."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cli_util import ROOT, failure_report, main_command, run_main, subprocess_env

ARGS = ("--config=configs/toy2d.py:runlocal", "--config.methods=cf,flow",
        "--config.train.steps=400", "--config.train.checkpoint_every=100", "--config.train.log_every=50")


def _kill_once_written(args, workdir, checkpoint, poll=0.01):
  """Starts `python -m cnf_jax.main *args --workdir=workdir`, SIGKILLs it as soon as `checkpoint`
  exists (or after 240 s, or when it ends by itself) and waits for it; returns the process."""
  env = subprocess_env()
  proc = subprocess.Popen(main_command(*args, f"--workdir={workdir}"), cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(poll)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  return proc


def test_run_killed_after_first_checkpoint_resumes_to_identical_results(tmp_path):
  reference = run_main(*ARGS, f"--workdir={tmp_path / 'uninterrupted'}")
  assert reference.returncode == 0, failure_report(reference)

  workdir = tmp_path / "interrupted"
  first_checkpoint = workdir / "checkpoints" / "flow" / "100"
  proc = _kill_once_written(ARGS, workdir, first_checkpoint)
  assert first_checkpoint.exists(), "the run never wrote its first checkpoint"
  assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  assert not (workdir / "results.json").exists()

  resumed = run_main(*ARGS, f"--workdir={workdir}")
  assert resumed.returncode == 0, failure_report(resumed)
  assert "model flow: resumed from step" in resumed.stderr
  expected = json.loads((tmp_path / "uninterrupted" / "results.json").read_text())
  assert json.loads((workdir / "results.json").read_text()) == expected
  steps = [(l["model"], l["step"]) for l in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())]
  assert len(steps) == len(set(steps)), "a resumed run must not duplicate metric lines"


def _checkpoint_in_progress(model):
  """True while orbax is writing a checkpoint of `model` (its temporary directory exists)."""
  def check(workdir):
    directory = workdir / "checkpoints" / model
    return directory.is_dir() and any("orbax-checkpoint-tmp" in p for p in os.listdir(directory))
  return check


def _exists(relative):
  return lambda workdir: (workdir / relative).exists()


# Moments to kill the run, in the order they happen; each restart resumes and is killed at the next.
KILL_POINTS = [
    ("before any checkpoint", _exists("run_identity.json")),
    ("while writing a checkpoint of flow", _checkpoint_in_progress("flow")),
    ("mid-training of flow, after a resume", _exists("checkpoints/flow/300")),
    ("while writing a checkpoint of cf", _checkpoint_in_progress("cf")),
    ("mid-training of cf", _exists("checkpoints/cf/200")),
    ("after the last checkpoint, while scoring", _exists("checkpoints/cf/400")),
]


def test_run_killed_at_six_points_resumes_to_bitwise_identical_results(tmp_path):
  """SIGKILL at six moments (two during checkpoint writes), each restart resuming the last."""
  reference = run_main(*ARGS, f"--workdir={tmp_path / 'uninterrupted'}")
  assert reference.returncode == 0, failure_report(reference)

  workdir = tmp_path / "interrupted"
  env = subprocess_env()
  for name, moment in KILL_POINTS:
    with open(tmp_path / "stderr.txt", "w") as err:
      proc = subprocess.Popen(main_command(*ARGS, f"--workdir={workdir}"), cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=err)
      while proc.poll() is None and not moment(workdir):
        time.sleep(0.0005)
      proc.send_signal(signal.SIGKILL)
      proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run finished before the kill point: {name}"
    assert moment(workdir), f"killed after the moment had passed: {name}"   # e.g. the temp dir is still there
    assert not (workdir / "results.json").exists()

  # The temporary directory of the last interrupted write is still on disk; it must be ignored.
  resumed = run_main(*ARGS, f"--workdir={workdir}")
  assert resumed.returncode == 0, failure_report(resumed)
  assert "model cf: resumed from step 400" in resumed.stderr
  for name in ("results.json",):
    assert (workdir / name).read_bytes() == (tmp_path / "uninterrupted" / name).read_bytes()
  with np.load(workdir / "scores.npz") as got, np.load(tmp_path / "uninterrupted" / "scores.npz") as want:
    assert sorted(got.files) == sorted(want.files)
    for key in want.files:
      np.testing.assert_array_equal(got[key], want[key])
  steps = [(l["model"], l["step"]) for l in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())]
  assert len(steps) == len(set(steps)), "a resumed run must not duplicate metric lines"


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  sys.path.insert(0, os.path.join(ROOT, "configs"))
  import toy2d as toy2d_config
  from cnf_jax.errors import NonFiniteLossError
  from cnf_jax.flows import flow_from_config
  from cnf_jax.training.loop import fit_flow
  from cnf_jax.training.plan import Objective
  from cnf_jax.training.summaries import MetricsWriter

  config = toy2d_config.get_config("runlocal")
  # Adam's first step moves every weight by ~lr: with lr = 1e4 the second loss is inf.
  config.train.lr, config.train.grad_clip, config.train.schedule = 1e4, 0.0, "constant"
  config.train.warmup_steps, config.train.checkpoint_every, config.train.log_every = 0, 1, 1
  x = np.random.default_rng(0).normal(size=(256, 2)).astype(np.float32)
  with pytest.raises(NonFiniteLossError, match=r"loss is (inf|nan) at step 2; stopped\. Last good checkpoint: step 1"):
    fit_flow("flow", flow_from_config(config.flow, 2), config, x, None, Objective("nll"), str(tmp_path), 0,
             MetricsWriter(str(tmp_path / "m.jsonl")))
  assert sorted(os.listdir(tmp_path / "checkpoints" / "flow")) == ["1"]


def test_cli_exit_code_for_non_finite_loss(tmp_path):
  data = tmp_path / "huge.npz"
  rng = np.random.default_rng(0)
  # Finite inputs whose squared norm overflows float32: log p = -inf at the first step.
  np.savez(data, inliers=np.full((64, 2), 1e20), contrastive=rng.normal(size=(64, 2)),
           test=rng.normal(size=(10, 2)), test_is_anomaly=np.repeat([0, 1], 5))
  proc = run_main("--config=configs/npz.py:runlocal", f"--config.data.path={data}", "--config.methods=flow",
                  "--config.preprocess.normalize=none", f"--workdir={tmp_path / 'w'}")
  assert proc.returncode == 3, proc.stderr[-2000:]
  assert "error: model 'flow': loss is" in proc.stderr and "at step" in proc.stderr
  assert not (tmp_path / "w" / "results.json").exists()


def test_outlier_exposure_killed_mid_fine_tune_resumes_to_identical_results(tmp_path):
  """oe checkpoints live under checkpoints/oe; a resumed fine-tune repeats the uninterrupted one."""
  args = ("--config=configs/toy2d.py:runlocal", "--config.methods=oe", "--config.train.steps=100",
          "--config.train.oe_steps=300", "--config.train.checkpoint_every=100", "--config.train.log_every=50")
  reference = run_main(*args, f"--workdir={tmp_path / 'uninterrupted'}")
  assert reference.returncode == 0, failure_report(reference)

  workdir = tmp_path / "interrupted"
  first = workdir / "checkpoints" / "oe" / "100"
  proc = _kill_once_written(args, workdir, first, poll=0.005)
  assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  assert first.exists() and not (workdir / "results.json").exists()
  assert not (workdir / "checkpoints" / "oe" / "300").exists()

  resumed = run_main(*args, f"--workdir={workdir}")
  assert resumed.returncode == 0, failure_report(resumed)
  assert "model flow: resumed from step 100" in resumed.stderr
  assert "model oe: resumed from step" in resumed.stderr
  assert (workdir / "results.json").read_bytes() == (tmp_path / "uninterrupted" / "results.json").read_bytes()
  with np.load(workdir / "scores.npz") as got, np.load(tmp_path / "uninterrupted" / "scores.npz") as want:
    np.testing.assert_array_equal(got["score_oe"], want["score_oe"])
  steps = [(l["model"], l["step"]) for l in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())]
  assert len(steps) == len(set(steps)) and ("oe", 300) in steps
