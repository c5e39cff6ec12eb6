"""The label-free selection criterion: held-out inliers against held-out contrastive rows, recorded
by every run with train.validation_fraction > 0, and the choice among candidate runs it makes."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cli_util import subprocess_env
from cnf_jax.evaluation import baselines
from cnf_jax.evaluation import selection
from cnf_jax.experiments import experiment

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
import npz as npz_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_heldout_auroc_is_the_auroc_with_contrastive_rows_positive():
  assert selection.heldout_auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
  assert selection.heldout_auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0
  # One of the four (inlier, contrastive) pairs is ordered wrongly.
  assert selection.heldout_auroc(np.array([0.0, 2.5]), np.array([2.0, 3.0])) == pytest.approx(0.75)


def _c(run, criterion, test):
  return selection.Candidate(run, run, criterion, test)


def test_choose_takes_the_highest_criterion_never_nan_and_the_first_of_ties():
  cands = [_c("a", 0.7, 0.9), _c("b", float("nan"), 0.99), _c("c", 0.8, 0.6), _c("d", 0.8, 0.95)]
  assert selection.choose(cands).run == "c"
  assert selection.choose([_c("a", float("nan"), 0.5)]).run == "a"
  with pytest.raises(ValueError):
    selection.choose([])


def test_rank_correlation_is_spearmans_rho_and_undefined_when_it_should_be():
  # Ranks of the criterion 1, 2, 3, 4 against ranks of the test AUROC 1, 3, 2, 4:
  # rho = 1 - 6 * (0 + 1 + 1 + 0) / (4 * 15) = 0.8.
  cands = [_c("a", 0.1, 0.5), _c("b", 0.2, 0.7), _c("c", 0.3, 0.6), _c("d", 0.4, 0.9)]
  assert selection.rank_correlation(cands) == pytest.approx(0.8)
  assert selection.rank_correlation(cands[:2]) is None
  assert selection.rank_correlation([_c("a", 0.5, 0.1), _c("b", 0.5, 0.2), _c("c", 0.5, 0.3)]) is None


def _npz(tmp_path):
  """Inliers around 0; contrastive data broad around 0; test anomalies shifted by 3."""
  rng = np.random.default_rng(0)
  inliers = rng.normal(size=(120, 3)).astype(np.float32)
  test = np.concatenate([rng.normal(size=(60, 3)), 3 + rng.normal(size=(30, 3))]).astype(np.float32)
  path = tmp_path / "data.npz"
  np.savez(path, inliers=inliers, contrastive=(rng.normal(size=(200, 3)) * 3).astype(np.float32), test=test,
           test_is_anomaly=np.r_[np.zeros(60), np.ones(30)].astype(bool))
  return str(path)


def _config(path, methods="flow,cf,kde,knn,mse_ratio", **train):
  c = npz_config.get_config("runlocal")
  c.data.path, c.methods = path, methods
  c.preprocess.normalize, c.preprocess.noise_std = "standardize", 0.0
  c.flow.hidden = (32, 32)
  c.train.steps, c.train.lr, c.train.warmup_steps = 60, 3e-3, 5
  c.train.batch_size = c.train.contrastive_batch_size = 16
  c.train.log_every, c.train.checkpoint_every, c.train.parallel = 20, 60, "single"
  c.train.validation_fraction = 0.25
  for k, v in train.items():
    c.train[k] = v
  return c


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("selection")
  config = _config(_npz(tmp))
  return config, experiment.train_and_evaluate(config, str(tmp / "run")), str(tmp / "run")


def test_a_run_records_the_criterion_of_every_method_from_held_out_rows(finished):
  config, results, workdir = finished
  record = results["selection"]
  assert record["criterion"] == "heldout_auroc"
  assert record["num_val_inliers"] == 30 and record["num_val_contrastive"] == 50
  assert set(record["values"]) == {"flow", "cf", "kde", "knn", "mse_ratio"}
  # Broad contrastive data around the inliers: every method ranks it above unseen inliers.
  for m, v in record["values"].items():
    assert 0.6 < v <= 1.0, (m, v)
  # The baselines were fitted on the training split only, and the criterion is theirs on the
  # held-out rows: refit by hand on the same rows and compare.
  run = experiment.prepare_run(config, workdir + "_again")
  assert len(run.fit_data.inliers) == 90 and len(run.fit_data.contrastive) == 150
  for name in ("kde", "knn", "mse_ratio"):
    score = baselines.fit(name, run.fit_data.inliers, run.fit_data.contrastive, config.baselines, config.seed)
    assert record["values"][name] == pytest.approx(
        selection.heldout_auroc(score(run.fit_data.val_inliers), score(run.fit_data.val_contrastive)), abs=1e-12)
    with np.load(os.path.join(workdir, "scores.npz")) as f:
      np.testing.assert_allclose(f[f"score_{name}"], score(run.data.test), rtol=1e-12)


def test_no_criterion_without_held_out_rows(tmp_path):
  results = experiment.train_and_evaluate(_config(_npz(tmp_path), methods="kde,knn", validation_fraction=0.0),
                                          str(tmp_path / "run"))
  assert "selection" not in results


def _fake_run(name, seed, knn_k, criterion, test):
  return {"run": name, "config": {"seed": seed, "data": {"inlier_class": "deer"}, "baselines": {"knn_k": knn_k}},
          "results": {"auroc": {"knn": test}, "selection": {"values": {"knn": criterion}}}}


def test_select_runs_groups_by_the_given_keys_and_labels_candidates_by_what_differs():
  runs = [_fake_run("k1-s0", 0, 1, 0.80, 0.70), _fake_run("k5-s0", 0, 5, 0.90, 0.75),
          _fake_run("k9-s0", 0, 9, 0.85, 0.80), _fake_run("k1-s1", 1, 1, 0.95, 0.60),
          _fake_run("k5-s1", 1, 5, 0.90, 0.65),
          {"run": "old", "config": {"seed": 0}, "results": {"auroc": {"knn": 1.0}}}]   # no criterion: left out
  chosen = selection.select_runs(runs, ["seed", "data.inlier_class"])
  assert [(s.group, s.method) for s in chosen] == [("seed=0,data.inlier_class=deer", "knn"),
                                                     ("seed=1,data.inlier_class=deer", "knn")]
  first, second = chosen
  assert first.chosen.run == "k5-s0" and first.chosen.settings == "baselines.knn_k=5"
  assert first.oracle.run == "k9-s0" and first.rho == pytest.approx(0.5)
  assert second.chosen.run == "k1-s1" and second.rho is None   # two candidates
  text = selection.markdown(chosen)
  assert "| knn | 2 | 2/3 | 67.50 | 72.50 | -5.00 | 0.50 (1) |" in text


def test_report_select_writes_the_choice_of_a_real_sweep(finished, tmp_path):
  _, _, workdir = finished
  root = tmp_path / "sweep"
  root.mkdir()
  os.symlink(workdir, root / "run")
  env = subprocess_env()
  out = subprocess.run([sys.executable, "-m", "cnf_jax.report", "--select", f"--workdir={root}", "--group_by=seed"],
                       capture_output=True, text=True, env=env, cwd=ROOT)
  assert out.returncode == 0, out.stderr
  chosen = json.load(open(root / "report" / "selection.json"))
  assert {c["method"] for c in chosen} == {"flow", "cf", "kde", "knn", "mse_ratio"}
  assert all(c["chosen"]["run"] == "run" and len(c["candidates"]) == 1 for c in chosen)
  assert "| cf |" in out.stdout
  # A sweep without the criterion is one error line and exit 2.
  empty = tmp_path / "empty"
  empty.mkdir()
  out = subprocess.run([sys.executable, "-m", "cnf_jax.report", "--select", f"--workdir={empty}"],
                       capture_output=True, text=True, env=env, cwd=ROOT)
  assert out.returncode == 2 and "validation_fraction" in out.stderr and "Traceback" not in out.stderr


def test_the_detector_records_the_criterion_and_select_detector_keeps_the_best(tmp_path):
  from cnf_jax.detector import ContrastiveFlowDetector, select_detector
  rng = np.random.default_rng(1)
  # Four columns with pairwise correlation 0.9: permuting the columns breaks it, so a flow that
  # learned it ranks permuted held-out rows above held-out rows (measured 0.94 for cf after 300
  # steps); one trained a single step has not (0.61).
  x = rng.multivariate_normal(np.zeros(4), np.full((4, 4), 0.9) + 0.1 * np.eye(4), size=1000)
  tiny = dict(num_blocks=4, hidden=(32, 32), batch_size=128, lr=3e-3, calibration_fraction=0, noise_std=0.02)
  best, table = select_detector(x, [{"method": "flow", "steps": 1}, {"method": "cf", "steps": 300}], **tiny)
  assert [t["method"] for t in table] == ["flow", "cf"] and best.method == "cf" and best.steps == 300
  assert table[1]["criterion"] > 0.9 > table[0]["criterion"]
  assert best.selection_criterion_ == table[1]["criterion"] and best.validation_fraction == 0.1
  # By hand: the held-out rows are the validation split of fit; the criterion is cf's on them.
  from cnf_jax.training import plan
  from cnf_jax.data import preprocessing
  stats = preprocessing.fit(x, "standardize")
  data = plan.with_validation(plan.FitData(preprocessing.apply(x, "standardize", stats, "x"), None, True), 0, 0.1)
  held = [-best._log_prob(best.variables_["cf"], rows) for rows in (data.val_inliers, data.val_contrastive)]
  assert best.selection_criterion_ == pytest.approx(selection.heldout_auroc(*held), abs=1e-12)
  best.save(str(tmp_path / "det.npz"))
  assert ContrastiveFlowDetector.load(str(tmp_path / "det.npz")).selection_criterion_ == best.selection_criterion_
  assert ContrastiveFlowDetector(**tiny).fit(x).selection_criterion_ is None   # no held-out rows
  with pytest.raises(Exception, match="validation_fraction=0"):
    select_detector(x, [{}], validation_fraction=0)
