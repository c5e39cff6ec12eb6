"""ContrastiveFlowDetector's PyOD API without pyod (CI does not install it): shapes, ranges, labels,
rejection, fit_predict, clone, pickling and predict(X, fdr=q). tests/test_pyod_parity.py compares
the values with pyod's own BaseDetector when pyod is installed."""
import pickle
import warnings

import numpy as np
import pytest
from scipy.stats import binom
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from cnf_jax.detector import ContrastiveFlowDetector, UnsupportedScoringError
from cnf_jax.errors import UserInputError

# Tiny and fast: the API is under test, not the flow's capacity.
FAST = dict(steps=50, num_blocks=2, hidden=(16,), batch_size=64)
DIM = 3


def _inliers(rng, n):
  return rng.normal(size=(n, DIM))


def _far(rng, n):
  return rng.normal(size=(n, DIM)) + 8.0      # 8 standard deviations from the inliers


@pytest.fixture(scope="module")
def fitted():
  rng = np.random.default_rng(0)
  x_train = _inliers(rng, 600)
  det = ContrastiveFlowDetector(**FAST).fit(x_train)
  x_test = np.concatenate([_inliers(rng, 300), _far(rng, 30)])
  return det, x_train, x_test


def test_predict_with_confidence(fitted):
  det, _, x = fitted
  labels, confidence = det.predict(x, return_confidence=True)
  np.testing.assert_array_equal(labels, det.predict(x))
  assert confidence.shape == (len(x),) and confidence.min() >= 0 and confidence.max() <= 1
  np.testing.assert_array_equal(confidence, det.predict_confidence(x))
  assert labels[300:].all()        # the far rows


def test_predict_proba_linear_and_unify(fitted):
  det, x_train, x = fitted
  scores = det.decision_function(x)
  for method in ("linear", "unify"):
    proba = det.predict_proba(x, method=method)
    assert proba.shape == (len(x), 2) and proba.min() >= 0 and proba.max() <= 1
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    order = np.argsort(scores)                    # p(anomaly) rises with the score
    assert np.all(np.diff(proba[order, 1]) >= 0), method
    proba_c, confidence = det.predict_proba(x, method=method, return_confidence=True)
    np.testing.assert_array_equal(proba_c, proba)
    np.testing.assert_array_equal(confidence, det.predict_confidence(x))
  np.testing.assert_array_equal(det.predict_proba(x), det.predict_proba(x, method="linear"))
  # linear: 0 at the lowest training score, 1 at the highest; the far rows lie beyond it (clipped).
  train = det.predict_proba(x_train)[:, 1]
  # (x * scale + offset, MinMaxScaler's and PyOD's arithmetic: exact at the minimum, within an ulp at the maximum)
  assert train[np.argmin(det.decision_scores_)] == 0 and train[np.argmax(det.decision_scores_)] == pytest.approx(1, abs=1e-12)
  assert np.all(det.predict_proba(x)[300:, 1] == 1)
  # unify: erf of the standardised score, 0 (clipped) below the training scores' mean.
  unify = det.predict_proba(x, method="unify")[:, 1]
  assert np.all(unify[scores <= det.decision_scores_.mean()] == 0)


@pytest.mark.parametrize("method", ["something", "LINEAR", None])
def test_predict_proba_bad_method(fitted, method):
  det, _, x = fitted
  with pytest.raises(ValueError) as info:       # a UserInputError, which is a ValueError as in PyOD
    det.predict_proba(x, method=method)
  assert isinstance(info.value, UserInputError)
  assert f"predict_proba(method={method!r})" in str(info.value) and "\n" not in str(info.value)


def test_confidence_by_hand(fitted):
  """Perini et al.'s confidence: ~1 far from threshold_, ~1/2 at it."""
  det, x_train, x = fitted
  n, k = len(det.decision_scores_), len(det.decision_scores_) - int(len(det.decision_scores_) * 0.1)
  confidence = det.predict_confidence(x)
  assert confidence[300:].min() == pytest.approx(1 - binom.cdf(k, n, (n + 1) / (n + 2)))
  assert confidence[300:].min() > 0.999
  # The training row whose score is closest to threshold_ sits on the fence.
  at = x_train[np.argmin(np.abs(det.decision_scores_ - det.threshold_))][None]
  assert 0.2 < det.predict_confidence(at)[0] < 0.8
  median = x_train[np.argsort(det.decision_scores_)[n // 2]][None]
  assert det.predict_confidence(median)[0] > 0.999


def test_rejection(fitted):
  det, _, x = fitted
  labels = det.predict(x)
  confidence = det.predict_confidence(x)
  for T in (2, 32):
    rejected = det.predict_with_rejection(x, T=T)
    assert set(np.unique(rejected)) <= {-2, 0, 1}
    assert det.rejection_threshold_ == 1 - 2 * np.exp(-T)
    kept = rejected != -2
    np.testing.assert_array_equal(rejected[kept], labels[kept])
    np.testing.assert_array_equal(~kept, 2 * np.abs(confidence - 0.5) <= 1 - 2 * np.exp(-T))
  assert (rejected == -2).any() and (rejected[300:] == 1).all()   # T=32 rejects some, never the far rows
  assert (det.predict_with_rejection(x, T=2) == -2).sum() < (rejected == -2).sum()

  rejected_s, stats = det.predict_with_rejection(x, T=32, return_stats=True)
  np.testing.assert_array_equal(rejected_s, rejected)
  assert isinstance(stats, list) and len(stats) == 3 and all(isinstance(v, float) for v in stats)
  expected_rate, upper_rate, upper_cost = stats
  assert 0 < expected_rate <= upper_rate and upper_cost > 0
  assert stats == list(det.compute_rejection_stats(T=32))
  # c_r < 0 (the default) is PyOD's "use the contamination".
  assert stats == det.predict_with_rejection(x, return_stats=True, c_r=det.contamination)[1]
  assert stats[2] != det.predict_with_rejection(x, return_stats=True, c_r=5)[1][2]


@pytest.mark.parametrize("kwargs,message", [
    (dict(T=0), "T=0: must be a number > 0"),
    (dict(delta=1.5), "delta=1.5: must be in (0, 1)"),
    (dict(c_fp="1"), "c_fp='1': must be a number"),
])
def test_rejection_bad_arguments(fitted, kwargs, message):
  det, _, x = fitted
  with pytest.raises(UserInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
    det.predict_with_rejection(x, return_stats=True, **kwargs)


def test_fit_predict_and_clone(fitted):
  det, x_train, _ = fitted
  copy = clone(det)
  assert copy.get_params() == det.get_params() and not hasattr(copy, "decision_scores_")
  labels = copy.fit_predict(x_train)
  np.testing.assert_array_equal(labels, copy.labels_)
  np.testing.assert_array_equal(labels, det.labels_)          # a fit is deterministic given random_state
  np.testing.assert_array_equal(labels, copy.predict(x_train))


def test_fit_predict_score(fitted):
  det, x_train, x = fitted
  y = np.r_[np.zeros(300), np.ones(30)]
  other = clone(det)
  with pytest.warns(FutureWarning, match="deprecated"):
    auc = other.fit_predict_score(x, y)
  assert auc == roc_auc_score(y, other.decision_scores_) and auc > 0.99
  with pytest.warns(FutureWarning):
    precision = other.fit_predict_score(x, y, scoring="prc_n_score")
  # Precision at n = 30: the share of anomalies among the 30 highest training scores.
  top = np.argsort(other.decision_scores_)[-30:]
  assert precision == pytest.approx(y[top].mean())
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    with pytest.raises(NotImplementedError) as info:
      other.fit_predict_score(x, y, scoring="something")
  assert isinstance(info.value, UnsupportedScoringError) and "scoring='something'" in str(info.value)


def test_pickle_round_trip_scores_identically(fitted):
  det, _, x = fitted
  loaded = pickle.loads(pickle.dumps(det))
  np.testing.assert_array_equal(loaded.decision_function(x), det.decision_function(x))
  np.testing.assert_array_equal(loaded.pvalues(x), det.pvalues(x))
  np.testing.assert_array_equal(loaded.predict_proba(x, method="unify"), det.predict_proba(x, method="unify"))
  np.testing.assert_array_equal(loaded.predict_confidence(x), det.predict_confidence(x))
  assert loaded.get_params() == det.get_params()


def test_saved_detector_has_the_pyod_api(fitted, tmp_path):
  det, _, x = fitted
  det.save(str(tmp_path / "d.npz"))
  loaded = ContrastiveFlowDetector.load(str(tmp_path / "d.npz"))
  for method in ("linear", "unify"):
    np.testing.assert_array_equal(loaded.predict_proba(x, method=method), det.predict_proba(x, method=method))
  np.testing.assert_array_equal(loaded.predict_with_rejection(x), det.predict_with_rejection(x))


@pytest.mark.parametrize("call,message", [
    (lambda d, x: d.predict(x, 0.01), "predict(return_confidence=0.01): must be True or False"),
    (lambda d, x: d.predict(x, alpha=0.1, fdr=0.1), "give alpha (false-alarm rate) or fdr"),
    (lambda d, x: d.predict(x, True, fdr=0.1), "drop alpha=/fdr="),
    (lambda d, x: d.predict(x, fdr=0), "predict(fdr=0): fdr must be a number in (0, 1)"),
    (lambda d, x: d.predict(x, fdr=1.0), "predict(fdr=1.0): fdr must be a number in (0, 1)"),
    (lambda d, x: d.predict(x, fdr="0.1"), "predict(fdr='0.1'): fdr must be a number in (0, 1)"),
    (lambda d, x: d.predict(x, fdr=True), "predict(fdr=True): fdr must be a number in (0, 1)"),
])
def test_predict_bad_arguments(fitted, call, message):
  det, _, x = fitted
  with pytest.raises(UserInputError) as info:
    call(det, x[:5])
  assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_fdr_control_on_exchangeable_inliers_with_planted_anomalies(fitted):
  """BH on conformal p-values (PRDS): E[inliers flagged / flagged] <= q m0 / m = 0.1 x 2000/2100.

  Each draw: a fresh calibration set (the guarantee is over it too) and fresh test rows, 2000
  inliers from the training distribution and 100 far anomalies.
  """
  det, _, _ = fitted
  det = pickle.loads(pickle.dumps(det))     # calibrate() replaces scores: keep the shared fixture intact
  rng = np.random.default_rng(7)
  q, draws, n_in, n_out = 0.1, 30, 2000, 100
  fdp, found = np.zeros(draws), np.zeros(draws)
  for i in range(draws):
    det.calibrate(_inliers(rng, 400))
    flagged = det.predict(np.concatenate([_inliers(rng, n_in), _far(rng, n_out)]), fdr=q).astype(bool)
    fdp[i] = flagged[:n_in].sum() / max(flagged.sum(), 1)
    found[i] = flagged[n_in:].mean()
  # The realised FDP of one draw varies a lot (sd ~0.06 measured: ~100 rows flagged, a few of them
  # inliers, all sharing one calibration set), so the mean of 30 draws has a standard error ~0.011;
  # 0.03 is ~3 of them above the bound q m0 / m = 0.095. A BH that did not adjust (flag p <= q) would
  # flag ~200 inliers a draw, FDP ~0.67, far outside.
  assert fdp.mean() <= q * n_in / (n_in + n_out) + 0.03, fdp
  assert found.mean() > 0.95                    # and BH finds the planted anomalies
  # With inliers only every flag is false: BH flags nothing in most draws (P(any) <= q).
  none = [det.predict(_inliers(rng, n_in), fdr=q).sum() == 0 for _ in range(10)]
  assert np.mean(none) >= 0.7
