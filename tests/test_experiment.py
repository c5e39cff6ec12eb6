"""The experiment runner: which models a run trains, auto eps, configs."""
import copy
import glob
import os

import numpy as np
import pytest

from cnf_jax.experiments import config_lib
from cnf_jax.experiments import experiment
from cnf_jax.errors import UserInputError
from cnf_jax.training import plan

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs")


def _load_config(name, arg=None):
  return config_lib.load_config_module(os.path.join(CONFIG_DIR, f"{name}.py")).get_config(arg)


@pytest.mark.parametrize("methods,auto,holdout,expected", [
    (("cf",), False, 0.1, ["cf"]),
    (("cf",), True, 0.1, ["eps_probe", "cf"]),
    (("cf",), True, 0.0, ["flow", "cf"]),
    (("flow_ratio",), False, 0.1, ["flow", "contrastive_flow"]),
    (("cf", "flow", "flow_ratio"), True, 0.0, ["flow", "contrastive_flow", "cf"]),
    (("oe",), False, 0.1, ["flow", "oe"]),
    (("cf", "oe", "knn"), True, 0.1, ["flow", "eps_probe", "cf", "oe"]),
    (("mse", "knn", "mse_ratio"), True, 0.1, []),    # baselines train nothing.
])
def test_models_needed(methods, auto, holdout, expected):
  assert plan.models_needed(methods, auto, holdout) == expected


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CONFIG_DIR, "*.py"))))
def test_every_config_and_its_runlocal_variant_validate(path):
  name = os.path.basename(path)[:-3]
  arg = {"oneclass": "deer", "cifar100": "people", "celeba": "female", "dataset_vs_dataset": "svhn"}.get(name)
  full = _load_config(name, arg)
  local = _load_config(name, f"{arg},runlocal" if arg else "runlocal")
  config_lib.validate(full)
  config_lib.validate(local)
  assert local.train.steps < full.train.steps
  spec_doc = open(path).read().split('"""')[1]
  assert "python -m cnf_jax.main" in spec_doc, f"{name}: the docstring must give the command"


def test_unknown_config_words_are_rejected():
  with pytest.raises(UserInputError, match="unknown argument"):
    _load_config("toy2d", "runlokal")
  # key=value pairs a config does not declare were ignored before configs declared their args.
  with pytest.raises(UserInputError, match=r"configs/toy2d.py: unknown argument\(s\) 'steps=10'; valid: runlocal$"):
    _load_config("toy2d", "runlocal,steps=10")
  with pytest.raises(UserInputError, match="exactly one CIFAR-10 class"):
    _load_config("oneclass", "runlocal")


def _npz(path):
  rng = np.random.default_rng(0)
  np.savez(path, inliers=rng.normal(size=(300, 4)) + 1.0, contrastive=rng.normal(size=(300, 4)) * 2,
           test=np.concatenate([rng.normal(size=(50, 4)) + 1.0, rng.normal(size=(50, 4)) * 2]),
           test_is_anomaly=np.repeat([0, 1], 50))
  return str(path)


def test_auto_eps_trains_a_probe_on_held_out_inliers(tmp_path):
  config = _load_config("npz", "runlocal")
  config.data.path = _npz(tmp_path / "d.npz")
  config.methods = "cf"
  config.preprocess.normalize, config.preprocess.noise_std = "standardize", 0.0
  config.objective.eps_auto = True
  results = experiment.train_and_evaluate(config, str(tmp_path / "w"))
  assert os.path.isdir(tmp_path / "w" / "checkpoints" / "eps_probe")
  assert not os.path.isdir(tmp_path / "w" / "checkpoints" / "flow")
  # In 4-D standardised data log p of inliers is around -6; eps must land in that range, not at 0.
  assert -20 < results["eps"] < 0
  assert set(results["auroc"]) == {"cf"}


def test_a_run_stopped_after_its_config_changed_is_not_taken_for_finished(tmp_path):
  """A run restarted with new settings rewrites config.json before it trains; stopped then, the
  old results.json must not pass for the new config's (a sweep would skip the run)."""
  config = _load_config("npz", "runlocal")
  config.data.path = _npz(tmp_path / "d.npz")
  config.methods = "knn"
  workdir = str(tmp_path / "w")
  experiment.train_and_evaluate(config, workdir)
  assert experiment.finished_results(config, workdir)["methods"] == ["knn"]
  more = copy.deepcopy(config)
  more.methods = "knn,mse"
  run = experiment.prepare_run(more, workdir)
  experiment.check_workdir(workdir, more, run.data.dim, run.preprocess_stats)   # where a kill could land
  assert experiment.finished_results(more, workdir) is None
  assert experiment.finished_results(config, workdir) is None and not os.path.exists(os.path.join(workdir, "results.json"))
  # The same config again keeps its results until it writes new ones.
  assert experiment.train_and_evaluate(more, workdir)["methods"] == ["knn", "mse"]
  experiment.check_workdir(workdir, more, run.data.dim, run.preprocess_stats)
  assert experiment.finished_results(more, workdir)["methods"] == ["knn", "mse"]


def test_config_validation_messages():
  config = _load_config("toy2d")
  config.methods = "cf,knm"
  with pytest.raises(UserInputError, match="methods entry='knm' is not valid; choose one of cf, flow, flow_ratio, "
                                           "oe, mse, mse_ratio, kde, pca, knn, lof, abod, mcd"):
    config_lib.validate(config)
  config = _load_config("toy2d")
  config.baselines.knn_k = 0
  with pytest.raises(UserInputError, match="baselines.knn_k=0 must be a positive integer"):
    config_lib.validate(config)
  config = _load_config("toy2d")
  config.train.steps = 0
  with pytest.raises(UserInputError, match="train.steps=0 must be > 0"):
    config_lib.validate(config)


ALL_METHODS = "cf,flow,flow_ratio,oe,mse,mse_ratio,kde,pca,knn,lof,abod,mcd"


def _oneclass_features(root, dim=8):
  """Tiny feature datasets in the extractor's format: 3 classes of 8-d vectors around distinct means."""
  from cnf_jax.data import feature_dataset
  rng = np.random.default_rng(0)
  names = ["deer", "horse", "ship"]
  means = 3.0 * np.eye(dim)[:3]
  def write(source, split, labels, x):
    feature_dataset.write(feature_dataset.dataset_dir(str(root), source, split, "fake"), x, labels,
                          np.arange(len(x)), metadata={"class_names": names}, split=split)
  for split, n in (("train", 120), ("test", 40)):
    labels = np.repeat(np.arange(3), n)
    write("cifar10", split, labels, means[labels] + rng.normal(size=(3 * n, dim)))
  write("tiny_imagenet", "train", np.zeros(300, np.int64), 2.0 * rng.normal(size=(300, dim)))


def _oneclass(root, methods):
  config = _load_config("oneclass", "deer,runlocal")
  config.data.features_root, config.data.backbone, config.methods = str(root), "fake", methods
  return config


def test_a_run_with_every_method_writes_all_of_them(tmp_path):
  _oneclass_features(tmp_path / "features")
  results = experiment.train_and_evaluate(_oneclass(tmp_path / "features", ALL_METHODS), str(tmp_path / "all"))
  methods = ALL_METHODS.split(",")
  assert list(results["auroc"]) == methods
  # Rows of Table 2: each other class against the inliers alone, every method.
  assert set(results["auroc_by_group"]) == {"horse", "ship"}
  for row in results["auroc_by_group"].values():
    assert list(row) == methods
  # Separated class means: the mean- and neighbour-based baselines find the other classes.
  for m in ("mse", "kde", "knn", "lof", "mcd"):
    assert results["auroc"][m] > 0.95, (m, results["auroc"][m])
  assert set(results["baseline_seconds"]) == set(methods[4:])
  with np.load(tmp_path / "all" / "scores.npz") as scores:
    assert {f"score_{m}" for m in methods} <= set(scores.files)
    for m in methods:
      assert scores[f"score_{m}"].shape == (120,)
  assert os.path.isdir(tmp_path / "all" / "checkpoints" / "oe")
  on_disk = __import__("json").loads((tmp_path / "all" / "results.json").read_text())
  assert on_disk["auroc"] == results["auroc"]
  # The dtype 'auto' resolved to on this machine is recorded, so runs on different CPUs can be told apart.
  from cnf_jax.flows.flow import resolve_compute_dtype
  assert on_disk["compute_dtype"] == resolve_compute_dtype("auto") in ("float32", "bfloat16")

  # Baselines alone train nothing and give the same numbers.
  alone = experiment.train_and_evaluate(_oneclass(tmp_path / "features", "mse,knn,mcd"), str(tmp_path / "alone"))
  assert not os.path.exists(tmp_path / "alone" / "checkpoints")
  assert os.path.isfile(tmp_path / "alone" / "results.json")
  assert alone["auroc"] == {m: results["auroc"][m] for m in ("mse", "knn", "mcd")}
  assert alone["auroc_by_group"]["ship"] == {m: results["auroc_by_group"]["ship"][m] for m in ("mse", "knn", "mcd")}
  assert "compute_dtype" not in alone   # it trained no flow


def _oe_toy(path):
  """2-D: inliers N(0, I); contrastive and anomalies N((1.5, 0), 0.5^2 I), inside the inliers' tail."""
  rng = np.random.default_rng(0)
  con = lambda n: np.array([1.5, 0.0]) + 0.5 * rng.normal(size=(n, 2))
  np.savez(path, inliers=rng.normal(size=(512, 2)), contrastive=con(512),
           test=np.concatenate([rng.normal(size=(200, 2)), con(200)]), test_is_anomaly=np.repeat([0, 1], 200))
  config = _load_config("npz", "runlocal")
  config.data.path, config.methods = str(path), "flow,oe"
  config.preprocess.normalize, config.preprocess.noise_std = "none", 0.0
  config.train.lr, config.train.oe_steps, config.objective.oe_margin = 2e-3, 40, 2.0
  return config


def test_outlier_exposure_separates_contrastive_like_points_better(tmp_path):
  results = experiment.train_and_evaluate(_oe_toy(tmp_path / "toy.npz"), str(tmp_path / "w"))
  # Measured: flow 0.667, oe 0.777.
  assert results["auroc"]["oe"] > results["auroc"]["flow"] + 0.05
  with np.load(tmp_path / "w" / "scores.npz") as s:
    inlier = ~s["is_anomaly"].astype(bool)
    # The inliers' likelihood is kept (NLL term) while the contrastive-like points lose theirs.
    assert s["score_oe"][inlier].mean() < s["score_flow"][inlier].mean() + 0.2
    assert s["score_oe"][~inlier].mean() > s["score_flow"][~inlier].mean() + 0.2


def test_fine_tuning_starts_from_the_given_variables_with_a_fresh_optimiser(tmp_path):
  import jax
  from cnf_jax.flows import flow_from_config, init_flow
  from cnf_jax.training.loop import fit_flow
  from cnf_jax.training.plan import Objective
  from cnf_jax.training.summaries import MetricsWriter
  config = _load_config("npz", "runlocal")
  config.train.steps, config.train.lr, config.train.checkpoint_every = 3, 1e-9, 3
  model = flow_from_config(config.flow, 2)
  trained = init_flow(model, jax.random.key(123))   # stands for the trained flow: not seed 0's init.
  rng = np.random.default_rng(0)
  out = fit_flow("oe", model, config, rng.normal(size=(64, 2)).astype(np.float32),
                 rng.normal(size=(64, 2)).astype(np.float32), Objective("oe", margin=1.0, weight=1.0),
                 str(tmp_path), 0, MetricsWriter(str(tmp_path / "m.jsonl")), init_variables=trained)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(trained)):   # params and constants
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  # The step donates its state: the trained model's own arrays must survive.
  assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(trained))
  fresh = init_flow(model, jax.random.split(jax.random.key(0))[0])
  assert any(not np.allclose(np.asarray(a), np.asarray(b)) for a, b in
             zip(jax.tree.leaves(fresh["params"]), jax.tree.leaves(trained["params"])))
