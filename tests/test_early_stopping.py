"""Early stopping in the one training loop: held-out criterion, best parameters kept, the same
stop in a single run, a vmapped sweep, a resumed run and the detector."""
import json
import os
import sys

import jax
import numpy as np
import pytest

from cnf_jax.detector import ContrastiveFlowDetector
from cnf_jax.experiments import experiment
from cnf_jax.experiments import sweep
from cnf_jax.flows import flow_from_config
from cnf_jax.training import loop
from cnf_jax.training import plan
from cnf_jax.training.checkpoints import Checkpoints

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
import npz as npz_config  # noqa: E402


def _npz(tmp_path, seed=0):
  """Few inliers, so that a flow trained long overfits and its held-out NLL turns up."""
  rng = np.random.default_rng(seed)
  inliers = rng.normal(size=(60, 3)).astype(np.float32) * [1.0, 0.3, 2.0]
  test = np.concatenate([rng.normal(size=(40, 3)), 3 + rng.normal(size=(20, 3))]).astype(np.float32)
  path = tmp_path / f"data{seed}.npz"
  np.savez(path, inliers=inliers, contrastive=rng.normal(size=(200, 3)).astype(np.float32) * 3, test=test,
           test_is_anomaly=np.r_[np.zeros(40), np.ones(20)].astype(bool))
  return str(path)


def _config(path, seed=0, methods="flow,cf"):
  c = npz_config.get_config("runlocal")
  c.data.path, c.methods, c.seed = path, methods, seed
  c.preprocess.normalize, c.preprocess.noise_std = "standardize", 0.0
  c.flow.hidden = (64, 64)
  c.train.steps, c.train.lr, c.train.warmup_steps = 400, 3e-3, 5
  c.train.batch_size = c.train.contrastive_batch_size = 16
  c.train.log_every, c.train.checkpoint_every, c.train.parallel = 20, 100, "single"
  c.train.validation_fraction, c.train.patience = 0.25, 3
  return c


def test_a_run_stops_early_and_keeps_its_best_parameters(tmp_path):
  config = _config(_npz(tmp_path))
  results = experiment.train_and_evaluate(config, str(tmp_path / "run"))
  record = results["early_stopping"]
  assert record["num_val_inliers"] == 15 and set(record["models"]) == {"flow", "cf"}
  flow = record["models"]["flow"]
  assert flow["stopped_at"] is not None and flow["stopped_at"] < config.train.steps
  # Stopped after `patience` evaluations (every log_every = 20 steps) without improvement.
  assert flow["stopped_at"] - flow["best_step"] == config.train.patience * config.train.log_every
  lines = [json.loads(l) for l in open(tmp_path / "run" / "metrics.jsonl")]
  # Every record says where the wall time since the previous one went; validation ran at eval steps.
  assert all(l[part] >= 0 for l in lines for part in loop.SPENT_PARTS)
  assert all(l["validation_s"] > 0 for l in lines if "val_loss" in l) and any(l["device_s"] > 0 for l in lines)
  val = {l["step"]: l["val_loss"] for l in lines if l["model"] == "flow" and "val_loss" in l}
  assert max(val) == flow["stopped_at"] and min(val, key=val.get) == flow["best_step"]
  assert val[flow["best_step"]] == pytest.approx(flow["best_val_loss"])
  assert not [l for l in lines if l["model"] == "flow" and l["step"] > flow["stopped_at"]]
  # The parameters kept are the best step's: their held-out NLL is the recorded best. They are
  # checkpointed with the bookkeeping; the run scored with them (the score of a flow is -log p).
  import orbax.checkpoint as ocp
  saved = Checkpoints(str(tmp_path / "run" / "checkpoints" / "flow.validation"))
  best = saved._manager.restore(saved.latest_step(), args=ocp.args.StandardRestore())
  saved.close()
  run = experiment.prepare_run(config, str(tmp_path / "again"))
  model = flow_from_config(config.flow, 3)
  variables = jax.device_get(best["variables"])
  criterion = loop._compiled_criterion(model, "nll", 0.0, 1.0)
  assert float(criterion(variables, run.fit_data.val_inliers, None, 0.0)) == pytest.approx(flow["best_val_loss"], rel=1e-5)
  with np.load(tmp_path / "run" / "scores.npz") as f:
    np.testing.assert_allclose(f["score_flow"], -run.log_prob(variables, run.data.test), rtol=1e-5, atol=1e-5)


def test_resume_after_an_interruption_stops_at_the_same_step_with_the_same_scores(tmp_path, monkeypatch):
  path = _npz(tmp_path)
  whole_config = _config(path)
  whole_config.train.checkpoint_every = 20
  whole = experiment.train_and_evaluate(whole_config, str(tmp_path / "whole"))
  assert whole["early_stopping"]["models"]["flow"]["stopped_at"] > 20
  # Interrupt the second run right after the flow's first checkpoint (step 20), then run it again.
  original = Checkpoints.save

  def save_then_die(self, step, state):
    original(self, step, state)
    if self.directory.endswith(os.path.join("checkpoints", "flow")):
      raise KeyboardInterrupt("killed")

  monkeypatch.setattr(Checkpoints, "save", save_then_die)
  with pytest.raises(KeyboardInterrupt):
    experiment.train_and_evaluate(whole_config, str(tmp_path / "resumed"))
  monkeypatch.setattr(Checkpoints, "save", original)
  resumed = experiment.train_and_evaluate(whole_config, str(tmp_path / "resumed"))
  assert resumed["early_stopping"] == whole["early_stopping"]
  with np.load(tmp_path / "whole" / "scores.npz") as a, np.load(tmp_path / "resumed" / "scores.npz") as b:
    for key in ("score_flow", "score_cf"):
      np.testing.assert_array_equal(a[key], b[key])


def test_each_model_of_a_vmapped_sweep_stops_as_its_own_run(tmp_path):
  configs = [_config(_npz(tmp_path, seed), seed=seed, methods="flow") for seed in (0, 1)]
  for c in configs:
    c.train.steps = 300
  together = sweep.train_and_evaluate_many(configs, [str(tmp_path / f"v{i}") for i in range(2)])
  alone = [experiment.train_and_evaluate(c, str(tmp_path / f"s{i}")) for i, c in enumerate(configs)]
  for t, a in zip(together, alone):
    assert t["early_stopping"]["models"]["flow"]["stopped_at"] == a["early_stopping"]["models"]["flow"]["stopped_at"]
    assert t["early_stopping"]["models"]["flow"]["best_step"] == a["early_stopping"]["models"]["flow"]["best_step"]
    assert t["auroc"]["flow"] == pytest.approx(a["auroc"]["flow"], abs=1e-3)


def test_the_detector_stops_early_and_checks_its_arguments():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(60, 3)).astype(np.float32)
  det = ContrastiveFlowDetector(method="flow", steps=600, batch_size=16, lr=3e-3, hidden=(64, 64),
                                num_blocks=2, noise_std=0.0, calibration_fraction=0,
                                validation_fraction=0.25, patience=2).fit(x)
  record = det.validation_["flow"]
  assert record["stopped_at"] is not None and record["stopped_at"] < 600
  assert len(det.loss_history_["flow"]) == record["stopped_at"]
  with pytest.raises(Exception, match="patience"):
    ContrastiveFlowDetector(patience=3).fit(x)


def test_without_validation_rows_nothing_changes():
  data = plan.FitData(np.zeros((10, 2), np.float32))
  assert plan.with_validation(data, 0, 0.0) is data
  held = plan.with_validation(plan.FitData(np.arange(40, dtype=np.float32).reshape(20, 2), permute=True), 0, 0.25)
  assert len(held.inliers) == 15 and len(held.val_inliers) == 5 and held.val_contrastive.shape == (5, 2)
  # The permuted validation rows keep every column's values (one permutation per column).
  np.testing.assert_array_equal(np.sort(held.val_contrastive, 0), np.sort(held.val_inliers, 0))
