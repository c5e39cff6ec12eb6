"""PyOD's per-detector test template (pyod/test/test_kde.py and its siblings) run on ContrastiveFlowDetector.

The same data (pyod.utils.data.generate_data: 200 training and 100 test rows, 2 features, 10%
outliers, random_state=42) and the same checks: fitted attributes, score shapes, ROC >= 0.8 on
the test rows, labels, predict_proba (default, linear, unify, a bad method), confidence,
fit_predict, fit_predict_score, the rank helpers and clone; plus the reject option, which the
template leaves out. Written for this repository (pytest, a fixture fitted once per module where
pyod's unittest setUp refits per test); pyod is needed only for generate_data.
"""
import warnings

import numpy as np
import pytest

pytest.importorskip("pyod")
from pyod.utils.data import generate_data  # noqa: E402
from scipy.stats import rankdata  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from cnf_jax.detector import ContrastiveFlowDetector  # noqa: E402

N_TRAIN, N_TEST, CONTAMINATION, ROC_FLOOR = 200, 100, 0.1, 0.8
FAST = dict(steps=50, num_blocks=2, hidden=(16,), batch_size=64)


@pytest.fixture(scope="module")
def case():
  # pyod 3.6's order (behaviour='new'); the template's older copies unpack X_train, y_train, X_test, y_test.
  x_train, x_test, y_train, y_test = generate_data(n_train=N_TRAIN, n_test=N_TEST, contamination=CONTAMINATION,
                                                   random_state=42)
  det = ContrastiveFlowDetector(contamination=CONTAMINATION, **FAST).fit(x_train)
  return det, x_train, y_train, x_test, y_test


def test_parameters(case):
  det = case[0]
  for name in ("decision_scores_", "labels_", "threshold_", "_mu", "_sigma"):
    assert getattr(det, name, None) is not None, name


def test_train_scores(case):
  det, x_train = case[:2]
  assert det.decision_scores_.shape == (len(x_train),)


def test_prediction_scores(case):
  det, _, _, x_test, y_test = case
  scores = det.decision_function(x_test)
  assert scores.shape == (len(x_test),)
  assert roc_auc_score(y_test, scores) >= ROC_FLOOR


def test_prediction_labels(case):
  det, _, _, x_test, y_test = case
  labels = det.predict(x_test)
  assert labels.shape == y_test.shape and set(np.unique(labels)) <= {0, 1}


@pytest.mark.parametrize("kwargs", [{}, dict(method="linear"), dict(method="unify")])
def test_prediction_proba(case, kwargs):
  det, _, _, x_test, _ = case
  proba = det.predict_proba(x_test, **kwargs)
  assert proba.shape == (len(x_test), 2) and proba.min() >= 0 and proba.max() <= 1


def test_prediction_proba_parameter(case):
  det, _, _, x_test, _ = case
  with pytest.raises(ValueError):
    det.predict_proba(x_test, method="something")


def test_prediction_labels_confidence(case):
  det, _, _, x_test, y_test = case
  labels, confidence = det.predict(x_test, return_confidence=True)
  assert labels.shape == y_test.shape and confidence.shape == y_test.shape
  assert confidence.min() >= 0 and confidence.max() <= 1


def test_prediction_proba_linear_confidence(case):
  det, _, _, x_test, y_test = case
  proba, confidence = det.predict_proba(x_test, method="linear", return_confidence=True)
  assert proba.min() >= 0 and proba.max() <= 1
  assert confidence.shape == y_test.shape and confidence.min() >= 0 and confidence.max() <= 1


def test_prediction_with_rejection(case):
  det, _, _, x_test, y_test = case
  labels = det.predict_with_rejection(x_test)
  assert labels.shape == y_test.shape and set(np.unique(labels)) <= {-2, 0, 1}
  labels, (expected_rate, upper_rate, upper_cost) = det.predict_with_rejection(x_test, return_stats=True)
  assert 0 <= expected_rate <= 1 and upper_rate >= 0 and upper_cost >= 0


def test_fit_predict(case):
  det, x_train, y_train = case[:3]
  labels = clone(det).fit_predict(x_train)
  assert labels.shape == y_train.shape
  np.testing.assert_array_equal(labels, det.labels_)


def test_fit_predict_score(case):
  det, _, _, x_test, y_test = case
  other = clone(det)     # fit_predict_score refits on x_test: leave the shared detector alone
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)    # deprecated, as in pyod
    other.fit_predict_score(x_test, y_test)
    other.fit_predict_score(x_test, y_test, scoring="roc_auc_score")
    other.fit_predict_score(x_test, y_test, scoring="prc_n_score")
    with pytest.raises(NotImplementedError):
      other.fit_predict_score(x_test, y_test, scoring="something")


@pytest.mark.parametrize("normalized", [False, True])
def test_predict_rank(case, normalized):
  det, x_train, _, x_test, _ = case
  scores, ranks = det.decision_function(x_test), det._predict_rank(x_test, normalized=normalized)
  # The order is kept (up to ties among ranks).
  np.testing.assert_allclose(rankdata(ranks), rankdata(scores), atol=2)
  assert ranks.min() > -0.1 and ranks.max() < (1.01 if normalized else len(x_train) + 1)


def test_model_clone(case):
  det = case[0]
  copy = clone(det)
  assert copy.get_params() == det.get_params() and not hasattr(copy, "decision_scores_")
