"""Conformal p-values: how unusual a score is among scores of known inliers.

For anomaly scores s (higher = more anomalous) and calibration scores c_1..c_n
of inliers the score function never saw in training,

  p(s) = (1 + #{i : c_i >= s}) / (n + 1).

If s and the c_i are exchangeable (an inlier from the same distribution),
P(p(s) <= alpha) = floor(alpha (n + 1)) / (n + 1) <= alpha: flagging p <= alpha
keeps the false-alarm rate on inliers at or below alpha (Vovk et al. 2005;
Bates et al. 2023, "Testing for outliers with conformal p-values").
"""
import numpy as np


def conformal_pvalues(calibration_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """p-values [M] of scores [M] against calibration scores [n] (both: higher = more anomalous)."""
  cal = np.sort(np.asarray(calibration_scores, np.float64))
  scores = np.asarray(scores, np.float64)
  at_least = cal.size - np.searchsorted(cal, scores, side="left")
  return (1.0 + at_least) / (cal.size + 1.0)
