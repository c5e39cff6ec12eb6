"""cnf_jax.evaluation.mcd: sklearn's FastMCD result where it is well defined, and a sound one where
the subsets' covariances are singular."""
import warnings

import numpy as np
import pytest
import scipy.linalg
from sklearn import covariance as sk_covariance

from cnf_jax.evaluation import mcd


def _contaminated(n, d, seed):
  """[n, d] heavy-tailed correlated rows, the first n // 10 shifted by 5 in every feature."""
  rng = np.random.default_rng(seed)
  x = rng.standard_t(3, size=(n, d)) @ rng.normal(size=(d, d))
  x[:n // 10] += 5.0
  return x


def _sklearn_fast_mcd(x, support_fraction, seed):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")   # "Determinant has increased", rounding at convergence
    return sk_covariance.fast_mcd(x, support_fraction=support_fraction, random_state=seed)


# Each branch of the schedule: n <= 500 (30 starts on all rows), 500 < n < 1500 (subsets, result
# from the merged set), n = 1500 (one merged candidate refined on all rows), n > 1500 (ten), D = 1.
@pytest.mark.parametrize("n, d, support_fraction", [(300, 8, None), (300, 8, 0.6), (700, 5, None), (900, 3, 0.8),
                                                    (1500, 4, None), (2000, 12, None), (400, 1, None)])
@pytest.mark.parametrize("seed", [0, 1])
def test_fast_mcd_equals_sklearn_on_non_singular_data(n, d, support_fraction, seed):
  x = _contaminated(n, d, seed)
  location, covariance, support, distances = mcd.fast_mcd(x, support_fraction, seed)
  want = _sklearn_fast_mcd(x, support_fraction, seed)
  np.testing.assert_array_equal(support, want[2])
  np.testing.assert_allclose(location, want[0], rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(covariance, want[1], rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(distances, want[3], rtol=1e-8)
  if d > 1:   # in one heavy-tailed dimension a shift of 5 does not separate the rows
    assert not support[:n // 10].any()


@pytest.mark.parametrize("n, d", [(300, 8), (1600, 6)])
def test_fit_min_cov_det_scores_as_sklearn_min_cov_det(n, d):
  x = _contaminated(n, d, 3)
  new_rows = np.random.default_rng(9).normal(size=(40, d)) * 3
  ours = mcd.fit_min_cov_det(x, None, random_state=3)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    theirs = sk_covariance.MinCovDet(random_state=3).fit(x)
  np.testing.assert_array_equal(ours.support_, theirs.support_)
  np.testing.assert_allclose(ours.mahalanobis(new_rows), theirs.mahalanobis(new_rows), rtol=1e-9)


@pytest.mark.parametrize("h, d", [(20, 50), (60, 40)])
def test_distances_under_a_singular_covariance_are_the_pseudo_inverse_ones(h, d):
  """h <= D: the Gram-matrix route; h > D with collinear features: the D x D route. Both equal
  (x - m) pinvh(C) (x - m) as sklearn computes it."""
  rng = np.random.default_rng(0)
  rows = rng.normal(size=(h, d))
  if h > d:
    rows[:, 1] = rows[:, 0]                       # rank D - 1
  estimate = mcd._Estimate.of(rows, np.arange(len(rows)))
  assert estimate.logdet == -np.inf and estimate.factor is None
  x = rng.normal(size=(30, d))
  centred = x - rows.mean(axis=0)
  want = np.einsum("nd,de,ne->n", centred, scipy.linalg.pinvh(estimate.covariance()), centred)
  np.testing.assert_allclose(estimate.distances(x), want, rtol=1e-8)


def test_distances_under_a_non_singular_covariance_use_its_inverse():
  rng = np.random.default_rng(1)
  rows = rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6))
  estimate = mcd._Estimate.of(rows, np.arange(len(rows)))
  covariance = np.cov(rows.T, bias=True)
  assert estimate.logdet == pytest.approx(np.linalg.slogdet(covariance)[1], rel=1e-12)
  x = rng.normal(size=(20, 6))
  centred = x - rows.mean(axis=0)
  want = np.einsum("nd,de,ne->n", centred, np.linalg.inv(covariance), centred)
  np.testing.assert_allclose(estimate.distances(x), want, rtol=1e-9)


def test_singular_subsets_still_give_a_c_step_fixed_point_without_the_outliers():
  """600 rows in 220 dimensions: the subsets' supports (206 rows) are singular, the final one
  (411 rows) is not. The result is what MCD requires: its support is the h rows closest under
  its own estimate, and no planted outlier is in it."""
  rng = np.random.default_rng(5)
  n, d = 600, 220
  x = rng.normal(size=(n, d)) @ (np.eye(d) + rng.normal(size=(d, d)) / np.sqrt(d))
  x[:30] = 2.0 * rng.normal(size=(30, d))        # wider rows: Mahalanobis outliers
  location, covariance, support, _ = mcd.fast_mcd(x, None, 0)
  h = support.sum()
  # (n + D + 1) / 2 rows, or one more: the merged set's h is ceil(n * (h / n)), as in sklearn
  assert h in (411, 412)
  assert np.isfinite(np.linalg.slogdet(covariance)[1])
  centred = x - location
  distances = np.einsum("nd,de,ne->n", centred, np.linalg.inv(covariance), centred)
  assert set(np.argsort(distances)[:h]) == set(np.flatnonzero(support))
  assert not support[:30].any()
