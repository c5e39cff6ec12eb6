"""The experiment runner: which models a run trains, auto eps, configs."""
import glob
import os

import numpy as np
import pytest

from cnf_jax import config_lib, experiment
from cnf_jax.errors import UserInputError

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs")


def _load_config(name, arg=None):
  return config_lib.load_config_module(os.path.join(CONFIG_DIR, f"{name}.py")).get_config(arg)


@pytest.mark.parametrize("methods,auto,holdout,expected", [
    (("cf",), False, 0.1, ["cf"]),
    (("cf",), True, 0.1, ["eps_probe", "cf"]),
    (("cf",), True, 0.0, ["flow", "cf"]),
    (("flow_ratio",), False, 0.1, ["flow", "contrastive_flow"]),
    (("cf", "flow", "flow_ratio"), True, 0.0, ["flow", "contrastive_flow", "cf"]),
])
def test_models_needed(methods, auto, holdout, expected):
  assert experiment.models_needed(methods, auto, holdout) == expected


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


def test_config_validation_messages():
  config = _load_config("toy2d")
  config.methods = "cf,knn"
  with pytest.raises(UserInputError, match="methods entry='knn' is not valid"):
    config_lib.validate(config)
  config = _load_config("toy2d")
  config.train.steps = 0
  with pytest.raises(UserInputError, match="train.steps=0 must be > 0"):
    config_lib.validate(config)
