"""A finished npz run for the score tests and the bad-input catalogue, and helpers to score with it.

The run is trained once per test session (`shared_run`) and only read by the tests;
a test that changes files in a run works on its own `copy_run`. `assert_unchanged`
checks that the shared run still holds the files it was created with.
"""
import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from cli_util import ROOT, subprocess_env
from conftest import CONFIGS


def write_features(path, dim=3, n=200, seed=0):
  """An npz task file: inliers around 2 (column scales 1, 3, 0.5), contrastive N(0, I),
  100 test rows (50 inliers like the training ones, 50 anomalies N(0, I))."""
  rng = np.random.default_rng(seed)
  np.savez(path, inliers=rng.normal(size=(n, dim)) * [1.0, 3.0, 0.5][:dim] + 2.0,
           contrastive=rng.normal(size=(n, dim)),
           test=rng.normal(size=(100, dim)) + np.repeat([[2.0], [0.0]], 50, axis=0),
           test_is_anomaly=np.repeat([0, 1], 50))
  return path


def finished_run(tmp_path, normalize="standardize"):
  """A finished npz runlocal run (all three methods) in tmp_path/run, trained in-process; (workdir, config)."""
  sys.path.insert(0, CONFIGS)
  import npz as npz_config
  from cnf_jax.experiments import experiment
  from cnf_jax.data import preprocessing
  from cnf_jax.tasks import npz as npz_task

  config = npz_config.get_config("runlocal")
  config.data.path = str(write_features(tmp_path / "features.npz"))
  config.preprocess.normalize = normalize
  workdir = str(tmp_path / "run")
  experiment.train_and_evaluate(config, workdir)
  # The run records the statistics it used: preprocessing.fit on its training inliers.
  inliers = npz_task.load_data(config).inliers.astype(np.float32)
  method, stats = preprocessing.load(os.path.join(workdir, "preprocessing.json"))
  assert method == normalize
  for key, value in preprocessing.fit(inliers, normalize).items():
    np.testing.assert_array_equal(stats[key], value)
  return workdir, config


def _fingerprint(workdir):
  """{relative path: (size, mtime_ns)} of every file under workdir."""
  out = {}
  for d, _, files in os.walk(workdir):
    for f in files:
      st = os.stat(os.path.join(d, f))
      out[os.path.relpath(os.path.join(d, f), workdir)] = (st.st_size, st.st_mtime_ns)
  return out


_SHARED = {}


def shared_run(tmp_path_factory):
  """(workdir, config) of one finished run per test session, trained on first use."""
  if "run" not in _SHARED:
    _SHARED["run"] = finished_run(tmp_path_factory.mktemp("score"))
    _SHARED["fingerprint"] = _fingerprint(_SHARED["run"][0])
  return _SHARED["run"]


def assert_unchanged(workdir):
  """Fails if a test added, removed or rewrote a file of the shared run (it should use copy_run)."""
  now, then = _fingerprint(workdir), _SHARED["fingerprint"]
  changed = sorted(p for p in set(now) | set(then) if now.get(p) != then.get(p))
  assert not changed, f"a test changed the shared run {workdir}: {changed[:5]}; give it a copy_run"


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  """(workdir, config) of the session's shared finished run (`shared_run`)."""
  return shared_run(tmp_path_factory)


@pytest.fixture
def run(shared):
  """The shared finished run; it must come back unchanged from every test (`assert_unchanged`)."""
  yield shared
  assert_unchanged(shared[0])


def copy_run(workdir, dest):
  """A copy of the run in `workdir` at `dest`, for a test that changes it; returns dest as a str."""
  shutil.copytree(workdir, dest)
  return str(dest)


def read_scores(path):
  """(ids, scores, p-values, is_anomaly) columns of a cnf_jax.score CSV."""
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  return ([r["id"] for r in rows], np.array([float(r["score"]) for r in rows]),
          np.array([float(r["p_value"]) for r in rows]), np.array([int(r["is_anomaly"]) for r in rows]))


def run_score(*args):
  """python -m cnf_jax.score ARGS from the repo root; returns the CompletedProcess."""
  env = subprocess_env()
  return subprocess.run([sys.executable, "-m", "cnf_jax.score", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
