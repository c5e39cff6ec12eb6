"""AUROC, AUPR and FPR at 95% TPR against hand-computed values."""
import numpy as np
import pytest

from cnf_jax.evaluation import metrics


def test_metrics_by_hand():
  # Anomalies (1) score 0.9, 0.8, 0.3; inliers (0) 0.7, 0.2, 0.1.
  scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
  y = np.array([1, 1, 0, 1, 0, 0])
  # 9 anomaly-inlier pairs; the anomaly wins 8 (only 0.3 < 0.7 loses).
  assert metrics.auroc(scores, y) == pytest.approx(8 / 9)
  # Average precision: recall steps at ranks 1, 2, 4 with precisions 1, 1, 3/4.
  assert metrics.aupr(scores, y) == pytest.approx((1 + 1 + 3 / 4) / 3)
  # Reaching 95% of the anomalies needs the threshold at 0.3: one inlier (0.7) of three above it.
  assert metrics.fpr_at_tpr(scores, y) == pytest.approx(1 / 3)
  # 2/3 of the anomalies are reached at 0.8 with no inlier flagged.
  assert metrics.fpr_at_tpr(scores, y, tpr=2 / 3) == 0.0


def test_perfect_and_reversed_scores():
  y = np.array([0, 0, 0, 1, 1])
  perfect = np.array([0.0, 0.1, 0.2, 5.0, 6.0])
  assert (metrics.auroc(perfect, y), metrics.aupr(perfect, y), metrics.fpr_at_tpr(perfect, y)) == (1.0, 1.0, 0.0)
  assert metrics.auroc(-perfect, y) == 0.0
  assert metrics.fpr_at_tpr(-perfect, y) == 1.0


def test_infinite_scores_rank_as_most_anomalous_and_nan_raises():
  y = np.array([0, 0, 1])
  assert metrics.fpr_at_tpr(np.array([0.0, 1.0, np.inf]), y) == 0.0
  with pytest.raises(ValueError, match="NaN"):
    metrics.aupr(np.array([0.0, np.nan, 1.0]), y)
