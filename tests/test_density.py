"""The learned densities are normalised: 1-D and 2-D flows integrate to 1, at init and after training."""
import os
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
import toy1d as toy1d_config  # noqa: E402
import toy2d as toy2d_config  # noqa: E402

from cnf_jax.evaluation import metrics  # noqa: E402
from cnf_jax.flows import flow_from_config, init_flow  # noqa: E402
from cnf_jax.tasks import toy1d, toy2d  # noqa: E402
from cnf_jax.training.loop import fit_flow  # noqa: E402
from cnf_jax.training.plan import Objective  # noqa: E402
from cnf_jax.training.summaries import MetricsWriter  # noqa: E402
from flow_util import randomise  # noqa: E402


def _mass_1d(log_prob, variables):
  grid = np.linspace(-20, 20, 40001)
  return np.trapezoid(np.exp(log_prob(variables, grid[:, None])), grid)


def _mass_2d(log_prob, variables, lim=14.0, n=701):
  axis = np.linspace(-lim, lim, n)
  xx, yy = np.meshgrid(axis, axis)
  density = np.exp(log_prob(variables, np.stack([xx.ravel(), yy.ravel()], 1))).reshape(n, n)
  return np.trapezoid(np.trapezoid(density, axis, axis=1), axis)


def _train(config, data, workdir, objective):
  model = flow_from_config(config.flow, data.dim)
  return model, fit_flow("m", model, config, data.inliers.astype(np.float32),
                         data.contrastive.astype(np.float32), objective, str(workdir), 0,
                         MetricsWriter(os.path.join(workdir, "metrics.jsonl")))


def test_1d_spline_flow_integrates_to_one_at_init_and_after_contrastive_training(tmp_path):
  config = toy1d_config.get_config("runlocal")
  config.train.steps = 150
  data = toy1d.load_data(config)
  model = flow_from_config(config.flow, 1)
  log_prob = metrics.make_log_prob_fn(model, 8192)
  init = randomise(init_flow(model, jax.random.key(0)), jax.random.key(1), 0.5)
  assert _mass_1d(log_prob, init) == pytest.approx(1.0, abs=1e-3)
  model, trained = _train(config, data, tmp_path, Objective("contrastive", eps=-7.0))
  assert _mass_1d(log_prob, trained) == pytest.approx(1.0, abs=1e-3)
  # Training moved the density (so the second check is not the first one again).
  grid = np.linspace(-3, 3, 61)[:, None]
  assert np.abs(log_prob(trained, grid) - log_prob(init_flow(model, jax.random.key(0)), grid)).max() > 0.1


def test_2d_allinone_flow_integrates_to_one_at_init_and_after_contrastive_training(tmp_path):
  config = toy2d_config.get_config("runlocal")
  config.flow.num_blocks = 4
  # Early in contrastive training the flow parks mass far outside the data (15% beyond
  # radius 14 after 150 steps); the inlier term pulls it back by ~400 steps. The flow
  # is normalised throughout, but a finite grid only sees all of it once it is back.
  config.train.steps = 400
  data = toy2d.load_data(config)
  model = flow_from_config(config.flow, 2)
  log_prob = metrics.make_log_prob_fn(model, 65536)
  init = randomise(init_flow(model, jax.random.key(0)), jax.random.key(1), 0.3)
  assert _mass_2d(log_prob, init) == pytest.approx(1.0, abs=5e-3)
  model, trained = _train(config, data, tmp_path, Objective("contrastive", eps=-6.0))
  assert _mass_2d(log_prob, trained) == pytest.approx(1.0, abs=5e-3)
