"""Data-parallel training over several (virtual CPU) devices equals training on one device.

The suite runs with 2 devices (tests/conftest.py); the last test reruns this file in a
fresh process with 4, since XLA fixes the device count when it starts. On a machine with one
accelerator (the default backend then, not the virtual CPU devices) the in-process tests are
skipped and the rerun uses the CPU (JAX_PLATFORMS=cpu), so the data-parallel path is still run.
"""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
import oneclass as oneclass_config  # noqa: E402

from cnf_jax.errors import UserInputError  # noqa: E402
from cnf_jax.flows import flow_from_config, init_flow  # noqa: E402
from cnf_jax.training.loop import fit_flow  # noqa: E402
from cnf_jax.training.plan import Objective  # noqa: E402
from cnf_jax.training.summaries import MetricsWriter  # noqa: E402


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


ONE_ACCELERATOR = jax.default_backend() != "cpu" and jax.local_device_count() < 2
needs_devices = pytest.mark.skipif(ONE_ACCELERATOR, reason="one accelerator device: test_the_same_with_four_devices "
                                   "runs these on 4 CPU devices")


@needs_devices
def test_sharded_training_gives_the_same_parameters_as_one_device(tmp_path):
  assert jax.local_device_count() >= 2, "conftest sets several CPU devices"
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


@needs_devices
def test_batch_not_divisible_by_devices_is_a_clear_error(tmp_path):
  n = jax.local_device_count()
  with pytest.raises(UserInputError, match=f"batch size {8 * n + 1} is not divisible by the {n} devices"):
    _fit(tmp_path, "data", batch=8 * n + 1)


@pytest.mark.skipif(jax.local_device_count() == 4, reason="this is the 4-device run")
def test_the_same_with_four_devices():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  if jax.default_backend() != "cpu":
    env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
                        env=env, capture_output=True, text=True, timeout=600,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
  assert "2 passed, 1 skipped" in proc.stdout
