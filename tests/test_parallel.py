"""Data-parallel training over 2 (virtual CPU) devices equals training on one device."""
import os
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
import oneclass as oneclass_config  # noqa: E402

from cnf_jax.errors import UserInputError  # noqa: E402
from cnf_jax.flows import flow_from_config, init_flow  # noqa: E402
from cnf_jax.train import MetricsWriter, Objective, fit_flow  # noqa: E402


def _sphere(rng, n, d, shift):
  x = rng.normal(size=(n, d)) + shift
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _fit(tmp_path, parallel, batch=32, steps=6):
  config = oneclass_config.get_config("deer,runlocal")
  config.train.parallel = parallel
  config.train.steps = steps
  config.train.batch_size = config.train.contrastive_batch_size = batch
  config.train.checkpoint_every = steps
  rng = np.random.default_rng(0)
  inliers, contrastive = _sphere(rng, 200, 8, 0.5), _sphere(rng, 300, 8, 0.0)
  model = flow_from_config(config.flow, 8)
  workdir = str(tmp_path / parallel)
  return fit_flow("cf", model, config, inliers, contrastive, Objective("contrastive", eps=0.0),
                  workdir, 0, MetricsWriter(os.path.join(workdir, "m.jsonl")))


def test_two_devices_give_the_same_parameters_as_one(tmp_path):
  assert jax.local_device_count() == 2, "conftest sets two CPU devices"
  single = _fit(tmp_path, "single")
  sharded = _fit(tmp_path, "data")
  leaves_single = jax.tree.leaves(single["params"])
  leaves_sharded = jax.tree.leaves(sharded["params"])
  for a, b in zip(leaves_single, leaves_sharded):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
  # The runs did train: the parameters moved away from their initial values.
  config = oneclass_config.get_config("deer,runlocal")
  init = init_flow(flow_from_config(config.flow, 8), jax.random.split(jax.random.key(0))[0])
  moved = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
              for a, b in zip(leaves_single, jax.tree.leaves(init["params"])))
  assert moved > 1e-4


def test_batch_not_divisible_by_devices_is_a_clear_error(tmp_path):
  with pytest.raises(UserInputError, match="not divisible by the 2 devices"):
    _fit(tmp_path, "data", batch=33)
