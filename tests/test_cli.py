"""The CLI on runlocal configs, and one-line errors for bad input."""
import json
import os

import numpy as np
import pytest

from cli_util import run_main


def _last_json(stdout):
  return json.loads(stdout.strip().splitlines()[-1])


def test_toy2d_runlocal_end_to_end(tmp_path):
  # runlocal's 40 steps barely move the flows from their N(0, I) base (inlier NLL 3.5 against 2.84 at
  # the optimum), and an untrained flow already separates the far outliers. 600 steps (one checkpoint
  # per model) take the time of runlocal's 40 (two) and reach the full config's numbers.
  proc = run_main("--config=configs/toy2d.py:runlocal", "--config.train.steps=600",
                  "--config.train.checkpoint_every=600", f"--workdir={tmp_path}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  summary = _last_json(proc.stdout)
  assert set(summary["auroc"]) == {"cf", "flow_ratio", "flow"}
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["auroc"] == summary["auroc"]
  far, against_q = results["auroc"], results["auroc_extra"]["contrastive"]
  # Inliers N([1, 1], I) against samples of q = N(0, I). Measured (seeds 0, 1, 2): cf 0.84, 0.83, 0.82;
  # flow 0.67, 0.70, 0.69 (the exact p scores 0.696); flow_ratio 0.86, 0.86, 0.84 (Bayes-optimal:
  # 0.841). An untrained flow (N(0, I) = q) scores 0.30 and a random scorer 0.5 +- 0.018 (500 vs 500).
  assert against_q["cf"] > 0.75 and against_q["flow"] > 0.6 and against_q["flow_ratio"] > 0.75, against_q
  # The contrastive term is what puts cf ahead of the flow here (by 0.13-0.17 measured).
  assert against_q["cf"] > against_q["flow"] + 0.05, against_q
  # Against the far ring: cf 0.99, 0.98, 0.98; flow 0.9997 or more; the likelihood ratio is near
  # chance (0.60, 0.54, 0.53; Fig. 4: the ring beyond the inliers looks as "inlier" as the inliers).
  assert far["cf"] > 0.9 and far["flow"] > 0.9 and far["cf"] > far["flow_ratio"] + 0.2, far
  assert (tmp_path / results["plot"]).stat().st_size > 10_000
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert {l["model"] for l in lines} == {"flow", "contrastive_flow", "cf"}
  assert all(np.isfinite(l["loss"]) for l in lines)
  scores = np.load(tmp_path / "scores.npz")
  assert scores["score_cf"].shape == (1000,) and scores["is_anomaly"].sum() == 500


def test_toy1d_runlocal_learns_the_positive_difference(tmp_path):
  # runlocal's 40 steps move the CF only from p (TV 0.226 to the target) to 0.18; the 1-D spline
  # trains at ~1,000 steps/s, so 600 steps (one checkpoint) cost no more time than runlocal's 40.
  proc = run_main("--config=configs/toy1d.py:runlocal", "--config.train.steps=600",
                  "--config.train.checkpoint_every=600", f"--workdir={tmp_path}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  results = json.loads((tmp_path / "results.json").read_text())
  # TV distance of the CF density to the analytic C(p - q)+. Measured (seeds 0, 1, 2): 0.096, 0.089,
  # 0.107. A wrong density fails the bound: p itself (a CF that ignores the contrastive term) is at
  # 0.226, q at 0.587.
  assert results["tv_distance"] < 0.15, results["tv_distance"]
  # The standard flow against p = N(0, 1): measured 0.026, 0.034, 0.033. N(0.3, 1) is at 0.119,
  # N(0, 1.3^2) at 0.126, q at 0.390.
  assert results["tv_distance_flow_to_p"] < 0.08, results["tv_distance_flow_to_p"]
  assert results["cf_mass_on_grid"] == pytest.approx(1.0, abs=1e-3)


def _write_npz(path, dim=3, n=200, **overrides):
  rng = np.random.default_rng(0)
  arrays = dict(inliers=rng.normal(size=(n, dim)) + 2.0, contrastive=rng.normal(size=(n, dim)),
                test=rng.normal(size=(100, dim)) + np.repeat([[2.0], [0.0]], 50, axis=0),
                test_is_anomaly=np.repeat([0, 1], 50))
  arrays.update(overrides)
  np.savez(path, **arrays)
  return path


def test_npz_runlocal_and_rerun_of_a_finished_workdir(tmp_path):
  data = _write_npz(tmp_path / "f.npz")
  args = ("--config=configs/npz.py:runlocal", f"--config.data.path={data}", f"--workdir={tmp_path / 'w'}")
  first = run_main(*args)
  assert first.returncode == 0, first.stderr[-2000:]
  again = run_main(*args)   # every model is restored from its final checkpoint, nothing retrains
  assert again.returncode == 0, again.stderr[-2000:]
  assert _last_json(again.stdout)["auroc"] == _last_json(first.stdout)["auroc"]
  assert "resumed from step 40" in again.stderr


def _error_of(proc):
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  lines = [l for l in proc.stderr.strip().splitlines() if l.startswith("error: ")]
  assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  return lines[0]


def test_unknown_config_key_lists_valid_keys(tmp_path):
  msg = _error_of(run_main("--config=configs/toy2d.py", "--config.train.stepz=3", f"--workdir={tmp_path}"))
  assert "unknown config key 'train.stepz'" in msg and "steps" in msg and "batch_size" in msg


def test_unknown_class_name(tmp_path):
  msg = _error_of(run_main("--config=configs/oneclass.py:dear", f"--workdir={tmp_path}"))
  assert "'dear'" in msg and "deer" in msg


def test_invalid_config_value(tmp_path):
  msg = _error_of(run_main("--config=configs/toy2d.py:runlocal", "--config.flow.block=glow",
                           f"--workdir={tmp_path}"))
  assert "flow.block='glow'" in msg and "allinone" in msg


def test_missing_features_name_the_path_and_the_command(tmp_path):
  msg = _error_of(run_main("--config=configs/oneclass.py:deer,runlocal",
                           f"--config.data.features_root={tmp_path / 'nothing'}", f"--workdir={tmp_path / 'w'}"))
  assert str(tmp_path / "nothing" / "cifar10-train-effnet_lite0_pca128") in msg
  assert "python -m cnf_jax.extract --source=" in msg and "python -m cnf_jax.extract.pca --fit=" in msg


@pytest.mark.parametrize("overrides,pattern", [
    (dict(inliers=np.full((10, 3), np.nan)), "inlier training features: 30 non-finite"),
    (dict(test=np.full((100, 3), np.inf)), "test features: 300 non-finite"),
    (dict(inliers=np.zeros((0, 3))), "inlier training features: the set is empty"),
    (dict(contrastive=np.ones((20, 5))), "contrastive features: has 5 features but the inliers have 3"),
])
def test_bad_feature_arrays(tmp_path, overrides, pattern):
  data = _write_npz(tmp_path / "bad.npz", **overrides)
  msg = _error_of(run_main("--config=configs/npz.py:runlocal", f"--config.data.path={data}",
                           f"--workdir={tmp_path / 'w'}"))
  assert pattern in msg
  assert not (tmp_path / "w" / "results.json").exists()


def test_workdir_of_another_feature_dimension_is_refused(tmp_path):
  workdir = tmp_path / "w"
  ok = run_main("--config=configs/npz.py:runlocal", "--config.methods=flow",
                f"--config.data.path={_write_npz(tmp_path / 'a.npz', dim=3)}",
                f"--workdir={workdir}")
  assert ok.returncode == 0, ok.stderr[-2000:]
  msg = _error_of(run_main("--config=configs/npz.py:runlocal", "--config.methods=flow",
                           f"--config.data.path={_write_npz(tmp_path / 'b.npz', dim=4)}", f"--workdir={workdir}"))
  assert "feature_dim" in msg and "was 3, now 4" in msg and "new --workdir" in msg


def test_missing_workdir_and_missing_npz_keys(tmp_path):
  assert "--workdir is required" in _error_of(run_main("--config=configs/toy2d.py"))
  np.savez(tmp_path / "x.npz", inliers=np.ones((3, 2)))
  msg = _error_of(run_main("--config=configs/npz.py", f"--config.data.path={tmp_path / 'x.npz'}",
                           f"--workdir={tmp_path / 'w'}"))
  assert "lacks the array(s) test, test_is_anomaly" in msg
