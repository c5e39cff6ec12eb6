"""The model plan and the one training loop: every model kind trains, and the detector equals the CLI.

In the spirit of the flax examples' fast tests: one (or a few) train steps of each
model of `plan.MODELS` on tiny data, through `loop.fit_models`, the loop that CLI
runs, sweeps and the detector all use.
"""
import json
import os
import sys

import jax
import numpy as np
import pytest

from cnf_jax.detector import ContrastiveFlowDetector
from cnf_jax.experiments import config_lib
from cnf_jax.experiments import experiment
from cnf_jax.flows import flow_from_config, init_flow
from cnf_jax.training import loop
from cnf_jax.training import plan

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
import npz as npz_config  # noqa: E402


def _tiny_config():
  c = config_lib.default_config()
  c.flow.num_blocks, c.flow.hidden = 2, (16,)
  c.train.batch_size = c.train.contrastive_batch_size = 16
  c.train.warmup_steps, c.train.parallel = 0, "single"
  return c


def _fit_data(permute: bool) -> plan.FitData:
  rng = np.random.default_rng(0)
  inliers = rng.normal(size=(40, 4)).astype(np.float32)
  contrastive = None if permute else rng.normal(2.0, 1.0, size=(50, 4)).astype(np.float32)
  return plan.FitData(inliers, contrastive, permute, probe_inliers=inliers[:30])


@pytest.mark.parametrize("permute", [False, True], ids=["contrastive_set", "permuted_columns"])
@pytest.mark.parametrize("name", list(plan.MODELS))
def test_one_train_step_of_each_model_kind(name, permute):
  config = _tiny_config()
  data = _fit_data(permute)
  model = flow_from_config(config.flow, 4)
  spec = plan.MODELS[name]
  init = init_flow(model, jax.random.key(1)) if spec.starts_from else None
  job = loop.Job(plan.model_inputs(name, data, eps=-5.0, oe_margin=1.0), plan.model_seed(0, name), init)
  fitted, = loop.fit_models(model, config.train, 0.01, [job], steps=2, name=name)
  assert fitted.losses.shape == (2,) and np.isfinite(fitted.losses).all()
  start = init if init is not None else init_flow(model, jax.random.split(jax.random.key(job.seed))[0])
  moved = [float(np.abs(np.asarray(a) - np.asarray(b)).max())
           for a, b in zip(jax.tree.leaves(fitted.variables["params"]), jax.tree.leaves(start["params"]))]
  assert max(moved) > 1e-4, "two Adam steps must move the parameters"
  # Constants (permutations) never train.
  for a, b in zip(jax.tree.leaves(fitted.variables["constants"]), jax.tree.leaves(start["constants"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_model_inputs_follow_the_table():
  data = _fit_data(permute=False)
  assert plan.model_inputs("flow", data).x is data.inliers
  assert plan.model_inputs("contrastive_flow", data).x is data.contrastive
  assert plan.model_inputs("eps_probe", data).x is data.probe_inliers
  cf = plan.model_inputs("cf", data, eps=3.0)
  assert cf.objective == plan.Objective("contrastive", 3.0) and cf.contrastive is data.contrastive
  permuted = _fit_data(permute=True)
  assert plan.model_inputs("contrastive_flow", permuted).objective.permute == "inlier"
  assert plan.model_inputs("cf", permuted).objective.permute == "contrastive"
  assert plan.model_inputs("oe", permuted, oe_margin=2.0).objective == plan.Objective(
      "oe", permute="contrastive", margin=2.0)


def test_every_method_scores_from_the_models_it_names():
  log_p = {name: np.array([1.0, -2.0]) * (i + 1) for i, name in enumerate(plan.MODELS)}
  for method, spec in plan.METHODS.items():
    scores = plan.anomaly_scores(method, {m: log_p[m] for m in spec.models})
    assert scores.shape == (2,)
  np.testing.assert_allclose(plan.anomaly_scores("cf", log_p), -log_p["cf"])
  np.testing.assert_allclose(plan.anomaly_scores("flow_ratio", log_p), log_p["contrastive_flow"] - log_p["flow"])
  with pytest.raises(ValueError, match="unknown flow method"):
    plan.anomaly_scores("knn", log_p)


def test_seeds_are_distinct_per_model_and_run():
  seeds = {plan.model_seed(s, name) for s in range(3) for name in plan.MODELS}
  assert len(seeds) == 3 * len(plan.MODELS)
  assert plan.batch_seed(7, "inlier") != plan.batch_seed(7, "contrastive")


def test_chunks_end_at_log_and_checkpoint_steps_whatever_the_start():
  assert loop.chunk_bounds(0, 25, 10, 20, 100) == [(0, 10), (10, 20), (20, 25)]
  assert loop.chunk_bounds(20, 25, 10, 20, 100) == [(20, 25)]       # a resume replays the same chunk
  assert loop.chunk_bounds(0, 7, 100, 0, 3) == [(0, 3), (3, 6), (6, 7)]   # memory cap


@pytest.mark.parametrize("method", ["cf", "flow_ratio"])
def test_the_detector_and_a_cli_run_train_the_same_flows(tmp_path, method):
  """The same settings and training rows give the same scores, whichever entry point trains them.

  Tolerance: the two chunk the steps differently (the detector at 100-step chunks, the
  run at its log/checkpoint steps), which reorders nothing but lets XLA compile the loop
  bodies apart; float32 rounding then differs in the last bits (measured: rtol < 1e-5).
  """
  rng = np.random.default_rng(3)
  inliers = rng.normal(size=(300, 3)).astype(np.float32) * [1.0, 0.5, 2.0]
  contrastive = rng.normal(size=(400, 3)).astype(np.float32) * 3.0
  test = np.concatenate([rng.normal(size=(60, 3)), 4 + rng.normal(size=(20, 3))]).astype(np.float32)
  path = tmp_path / "data.npz"
  np.savez(path, inliers=inliers, contrastive=contrastive, test=test,
           test_is_anomaly=np.r_[np.zeros(60), np.ones(20)].astype(bool))

  det = ContrastiveFlowDetector(method=method, eps="auto", normalize="standardize", noise_std=0.01,
                                num_blocks=2, hidden=(16, 16), steps=60, batch_size=32, lr=2e-3,
                                warmup_steps=5, calibration_fraction=0, random_state=4)
  det.fit(inliers, contrastive=contrastive)

  config = npz_config.get_config("runlocal")
  overrides = {"data.path": str(path), "methods": method, "seed": 4, "preprocess.normalize": "standardize",
               "preprocess.noise_std": 0.01, "flow.num_blocks": 2, "flow.hidden": (16, 16),
               "flow.permute_soft": False, "objective.eps_auto": True, "objective.eps_holdout": 0.1,
               "train.steps": 60, "train.batch_size": 32, "train.contrastive_batch_size": 32, "train.lr": 2e-3,
               "train.warmup_steps": 5, "train.parallel": "single"}
  for key, value in overrides.items():
    config_lib.set_dotted(config, key, value)
  experiment.train_and_evaluate(config, str(tmp_path / "run"))
  with np.load(tmp_path / "run" / "scores.npz") as f:
    cli_scores = f[f"score_{method}"]
  np.testing.assert_allclose(det.decision_function(test), cli_scores, rtol=1e-4, atol=1e-4)


def test_identical_jobs_train_once_and_every_run_gets_its_model_checkpoints_and_log(tmp_path, caplog):
  # Flow-ratio's contrastive flow in a sweep over classes: the same rows and seed in every run.
  # Jobs 0 and 2 are identical, job 1 has another seed: two models train, job 2 gets job 0's.
  from cnf_jax.training.summaries import MetricsWriter
  config = _tiny_config()
  config.train.checkpoint_every = 2
  data = _fit_data(False)
  model = flow_from_config(config.flow, 4)
  inputs = plan.model_inputs("contrastive_flow", data)
  def job(seed, i):
    os.makedirs(tmp_path / f"run{i}")
    return loop.Job(inputs, seed, checkpoint_dir=str(tmp_path / f"run{i}" / "checkpoints" / "q"),
                    writer=MetricsWriter(str(tmp_path / f"run{i}" / "metrics.jsonl"), tensorboard=False))
  jobs = [job(7, 0), job(8, 1), job(7, 2)]
  assert loop.job_key(jobs[0]) == loop.job_key(jobs[2]) != loop.job_key(jobs[1])
  with caplog.at_level("INFO"):
    fitted = loop.fit_models(model, config.train, 0.01, jobs, steps=4, name="q")
  assert "3 runs, 2 distinct models to train" in caplog.text
  same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert same(fitted[0].variables, fitted[2].variables) and not same(fitted[0].variables, fitted[1].variables)
  np.testing.assert_array_equal(fitted[0].losses, fitted[2].losses)
  # What the identical job would have given alone (one model in the program).
  alone, = loop.fit_models(model, config.train, 0.01, [loop.Job(inputs, 7)], steps=4, name="q")
  np.testing.assert_allclose(alone.losses, fitted[0].losses, rtol=1e-5)
  # Run 2 has its own copy of the checkpoints (steps 2 and 4) and its own log records.
  assert sorted(os.listdir(tmp_path / "run2" / "checkpoints" / "q")) == sorted(
      os.listdir(tmp_path / "run0" / "checkpoints" / "q"))
  logs = [[json.loads(l)["step"] for l in open(tmp_path / f"run{i}" / "metrics.jsonl")] for i in range(3)]
  assert logs[0] == logs[2] == logs[1] and logs[0][-1] == 4
  # A rerun resumes every run from its checkpoints without training: the same variables.
  again = loop.fit_models(model, config.train, 0.01, jobs, steps=4, name="q")
  assert [a.start_step for a in again] == [4, 4, 4]
  assert same(again[2].variables, fitted[2].variables)


def test_models_with_different_noise_train_as_one_program_like_apart():
  """Jobs of one program may differ in their noise (the detector's noise candidates): the
  noise is then traced per model, and each model trains as it would alone with that noise."""
  config = _tiny_config()
  data = _fit_data(False)
  model = flow_from_config(config.flow, 4)
  inputs = plan.model_inputs("flow", data)
  jobs = [loop.Job(inputs, 3, noise_std=noise) for noise in (0.05, 0.5)]
  assert loop.job_key(jobs[0]) != loop.job_key(jobs[1])
  # A job without its own noise trains with fit_models' (0.05 here): the same model as jobs[0].
  assert loop.job_key(loop.Job(inputs, 3), 0.05) == loop.job_key(jobs[0], 0.05)
  assert loop.job_key(loop.Job(inputs, 3), 0.5) == loop.job_key(jobs[1], 0.05)
  together = loop.fit_models(model, config.train, 0.05, jobs, steps=6, name="n", progress=False)
  for job, both in zip(jobs, together):
    alone, = loop.fit_models(model, config.train, job.noise_std, [loop.Job(inputs, 3)], steps=6, name="n",
                             progress=False)
    np.testing.assert_allclose(both.losses, alone.losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(both.variables), jax.tree.leaves(alone.variables)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert not np.allclose(together[0].losses, together[1].losses)


def test_a_job_with_the_shared_noise_spelled_out_trains_once_with_one_without(caplog):
  config = _tiny_config()
  model = flow_from_config(config.flow, 4)
  inputs = plan.model_inputs("flow", _fit_data(False))
  with caplog.at_level("INFO"):
    fitted = loop.fit_models(model, config.train, 0.05, [loop.Job(inputs, 3), loop.Job(inputs, 3, noise_std=0.05)],
                             steps=4, name="n", progress=False)
  assert "2 runs, 1 distinct models to train" in caplog.text
  np.testing.assert_array_equal(fitted[0].losses, fitted[1].losses)
