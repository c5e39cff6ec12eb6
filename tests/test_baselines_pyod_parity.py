"""Each classical baseline against the PyOD detector it re-implements, on new rows.

pyod is an optional extra (pip install -e ".[pyod]"); without it this file is skipped.
The baselines are fitted on training rows and score test rows that are not among them:
the comparison is with PyOD's decision_function on those rows (not its decision_scores_
of the training rows, which leave each row out of its own neighbours).
"""
import warnings

import numpy as np
import pytest

pytest.importorskip("pyod")
from pyod.models.abod import ABOD  # noqa: E402
from pyod.models.kde import KDE  # noqa: E402
from pyod.models.knn import KNN  # noqa: E402
from pyod.models.lof import LOF  # noqa: E402
from pyod.models.mcd import MCD  # noqa: E402
from pyod.models.pca import PCA  # noqa: E402

from cnf_jax.evaluation import baselines  # noqa: E402
from cnf_jax.experiments import config_lib  # noqa: E402

# The same arithmetic up to the order of operations and the neighbour search (PyOD's trees,
# our brute force): measured differences are below 1e-14 relative; KDE, MCD and PCA run the
# very same sklearn code and agree exactly.
RTOL = 1e-6

# Our method, PyOD's detector with its defaults (MCD: the run's seed as random_state).
PYOD = {
    "kde": lambda seed: KDE(),
    "pca": lambda seed: PCA(),
    "knn": lambda seed: KNN(),
    "lof": lambda seed: LOF(),
    "abod": lambda seed: ABOD(),
    "mcd": lambda seed: MCD(random_state=seed),
}


def _random(seed):
  """Train [300, 8], test [100, 8]: half from the training distribution, half wider."""
  rng = np.random.default_rng(seed)
  mix = rng.normal(size=(8, 8)) / 3 + np.eye(8)
  train = rng.normal(size=(300, 8)) @ mix
  test = np.concatenate([rng.normal(size=(50, 8)) @ mix, 3 * rng.normal(size=(50, 8))])
  return train, test


def _with_ties():
  """Duplicated training rows, test rows equal to (duplicated) training rows and to each other."""
  train, test = _random(7)
  train[10:13] = train[9]                   # one row four times
  train[20] = train[21]
  test[:3] = train[9]                       # on the quadruplicated row: ABOD skips its pairs
  test[3] = train[20]
  test[4] = train[50]
  test[5] = test[6]
  return train, test


def _ours(name, train, test, seed, **options):
  cfg = config_lib.default_config().baselines
  cfg.update(options)
  return baselines.fit(name, train, None, cfg, seed)(test)


def _pyod(detector, train, test):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")   # e.g. MCD's "covariance matrix not full rank" on tied rows
    return detector.fit(train).decision_function(test)


@pytest.mark.parametrize("name", sorted(PYOD))
@pytest.mark.parametrize("data", ["seed=0", "seed=1", "seed=2", "ties"])
def test_baseline_equals_pyod_on_new_rows(name, data):
  seed = 0 if data == "ties" else int(data.split("=")[1])
  train, test = _with_ties() if data == "ties" else _random(seed)
  ours = _ours(name, train, test, seed)
  theirs = _pyod(PYOD[name](seed), train, test)
  assert ours.shape == theirs.shape == (100,) and np.isfinite(ours).all()
  if name == "abod" and data == "ties":
    # The first 3 test rows equal 4 of their 5 neighbours: no pair forms an angle, PyOD's
    # variance of nothing is NaN, ours 0 (the documented difference).
    assert np.isnan(theirs[:3]).all() and (ours[:3] == 0).all()
    ours, theirs = ours[3:], theirs[3:]
  np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=0)


@pytest.mark.parametrize("standardize,weighted", [(False, True), (True, False), (False, False)])
def test_pca_options_equal_pyods(standardize, weighted):
  train, test = _random(3)
  ours = _ours("pca", train, test, 0, pca_standardize=standardize, pca_weighted=weighted)
  theirs = _pyod(PCA(standardization=standardize, weighted=weighted), train, test)
  np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=0)


@pytest.mark.parametrize("method", baselines.KNN_METHODS)
def test_knn_methods_and_other_k_equal_pyods(method):
  train, test = _with_ties()
  ours = _ours("knn", train, test, 0, knn_method=method, knn_k=9)
  np.testing.assert_allclose(ours, _pyod(KNN(method=method, n_neighbors=9), train, test), rtol=RTOL, atol=0)
  ours = _ours("abod", train, test, 0, abod_k=9)
  np.testing.assert_allclose(ours, _pyod(ABOD(n_neighbors=9), train, test), rtol=RTOL, atol=0)
