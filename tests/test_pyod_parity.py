"""ContrastiveFlowDetector's PyOD API against pyod 3.6.7's own BaseDetector on the same scores.

pyod is an optional extra (pip install -e ".[pyod]"); without it this file is skipped. The
reference is a pyod detector whose decision_function is ours, fitted on the same rows, so its
decision_scores_, threshold_, labels_, _mu and _sigma come from pyod's own fit-time code and
every method below runs pyod's implementation on identical inputs.
"""
import warnings

import numpy as np
import pytest

pyod = pytest.importorskip("pyod")
from pyod.models.base import BaseDetector  # noqa: E402
from pyod.utils.utility import precision_n_scores  # noqa: E402

from cnf_jax.detector import ContrastiveFlowDetector  # noqa: E402

FAST = dict(steps=50, num_blocks=2, hidden=(16,), batch_size=64)
# The conversions are the same arithmetic on the same float64 scores; only the order of a few
# operations could differ, so the tolerance is a few ulps.
TIGHT = dict(rtol=1e-12, atol=1e-15)


class _PyodWithOurScores(BaseDetector):
  """A pyod detector that scores with a fitted ContrastiveFlowDetector."""

  def __init__(self, scorer=None, contamination=0.1):
    super().__init__(contamination=contamination)
    self.scorer = scorer

  def fit(self, X, y=None):
    self._set_n_classes(y)
    self.decision_scores_ = self.decision_function(X)
    self._process_decision_scores()
    return self

  def decision_function(self, X):
    return self.scorer.decision_function(X)


@pytest.fixture(scope="module", params=[0.1, 0.05], ids=["contamination=0.1", "contamination=0.05"])
def pair(request):
  rng = np.random.default_rng(0)
  x_train = rng.normal(size=(600, 3))
  ours = ContrastiveFlowDetector(contamination=request.param, **FAST).fit(x_train)
  theirs = _PyodWithOurScores(ours, contamination=request.param).fit(x_train)
  # Test rows: inliers, rows near the threshold and far anomalies.
  x = np.concatenate([rng.normal(size=(300, 3)), rng.normal(size=(100, 3)) * 1.8, rng.normal(size=(30, 3)) + 5])
  return ours, theirs, x_train, x


def test_fitted_attributes(pair):
  ours, theirs, _, _ = pair
  np.testing.assert_array_equal(ours.decision_scores_, theirs.decision_scores_)
  assert ours.threshold_ == theirs.threshold_
  np.testing.assert_array_equal(ours.labels_, theirs.labels_)
  assert (ours._mu, ours._sigma) == (theirs._mu, theirs._sigma)


def test_predict(pair):
  ours, theirs, _, x = pair
  np.testing.assert_array_equal(ours.predict(x), theirs.predict(x))
  labels, confidence = ours.predict(x, return_confidence=True)
  ref_labels, ref_confidence = theirs.predict(x, return_confidence=True)
  np.testing.assert_array_equal(labels, ref_labels)
  np.testing.assert_allclose(confidence, ref_confidence, **TIGHT)


@pytest.mark.parametrize("method", ["linear", "unify"])
def test_predict_proba(pair, method):
  ours, theirs, _, x = pair
  np.testing.assert_allclose(ours.predict_proba(x, method=method), theirs.predict_proba(x, method=method), **TIGHT)
  proba, confidence = ours.predict_proba(x, method=method, return_confidence=True)
  ref_proba, ref_confidence = theirs.predict_proba(x, method=method, return_confidence=True)
  np.testing.assert_allclose(proba, ref_proba, **TIGHT)
  np.testing.assert_allclose(confidence, ref_confidence, **TIGHT)
  with pytest.raises(ValueError):       # both raise ValueError for an unknown method
    theirs.predict_proba(x, method="something")
  with pytest.raises(ValueError):
    ours.predict_proba(x, method="something")


def test_predict_confidence(pair):
  ours, theirs, x_train, x = pair
  for rows in (x, x_train):
    np.testing.assert_allclose(ours.predict_confidence(rows), theirs.predict_confidence(rows), **TIGHT)


@pytest.mark.parametrize("T", [1, 2, 4, 32])
def test_predict_with_rejection(pair, T):
  ours, theirs, _, x = pair
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)     # pyod warns that c_r=-1 becomes the contamination
    warnings.simplefilter("ignore", RuntimeWarning)  # and takes sqrt of a negative for small T (-> NaN -> 0)
    ref = theirs.predict_with_rejection(x, T=T)
    ref_labels, ref_stats = theirs.predict_with_rejection(x, T=T, return_stats=True)
    ref_costed = theirs.predict_with_rejection(x, T=T, return_stats=True, delta=0.05, c_fp=2, c_fn=3, c_r=0.5)
  np.testing.assert_array_equal(ours.predict_with_rejection(x, T=T), ref)
  labels, stats = ours.predict_with_rejection(x, T=T, return_stats=True)
  np.testing.assert_array_equal(labels, ref_labels)
  np.testing.assert_allclose(stats, ref_stats, **TIGHT)
  labels, stats = ours.predict_with_rejection(x, T=T, return_stats=True, delta=0.05, c_fp=2, c_fn=3, c_r=0.5)
  np.testing.assert_array_equal(labels, ref_costed[0])
  np.testing.assert_allclose(stats, ref_costed[1], **TIGHT)
  assert ours.rejection_threshold_ == theirs.rejection_threshold_
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    ref_stats = theirs.compute_rejection_stats(T=T)
  np.testing.assert_allclose(ours.compute_rejection_stats(T=T), ref_stats, **TIGHT)


def test_rejection_labels_are_mixed_at_t32(pair):
  """The comparison above means something only if rejections happen: at T=32 some rows are rejected."""
  ours, _, _, x = pair
  assert set(np.unique(ours.predict_with_rejection(x, T=32))) == {-2, 0, 1}


def test_predict_rank(pair):
  ours, theirs, _, x = pair
  np.testing.assert_array_equal(ours._predict_rank(x), theirs._predict_rank(x))
  np.testing.assert_allclose(ours._predict_rank(x, normalized=True), theirs._predict_rank(x, normalized=True), **TIGHT)


def test_fit_predict_and_fit_predict_score(pair):
  ours, theirs, x_train, x = pair
  y = np.r_[np.zeros(400), np.ones(30)]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)   # both are deprecated in pyod
    np.testing.assert_array_equal(ours.fit_predict(x_train), theirs.fit_predict(x_train))
    for scoring in ("roc_auc_score", "prc_n_score"):
      assert ours.fit_predict_score(x, y, scoring=scoring) == pytest.approx(
          theirs.fit_predict_score(x, y, scoring=scoring), rel=1e-12)
    assert ours.fit_predict_score(x, y, scoring="prc_n_score") == pytest.approx(
        precision_n_scores(y, ours.decision_scores_), rel=1e-12)
  # Both fits above were on x: put the fixture back on the training rows for the other tests.
  ours.fit(x_train)
  theirs.fit(x_train)
