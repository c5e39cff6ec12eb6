"""Conformal p-values: how unusual a score is among scores of known inliers.

For anomaly scores s (higher = more anomalous) and calibration scores c_1..c_n
of inliers the score function never saw in training,

  p(s) = (1 + #{i : c_i >= s}) / (n + 1).

If s and the c_i are exchangeable (an inlier from the same distribution),
P(p(s) <= alpha) = floor(alpha (n + 1)) / (n + 1) <= alpha: flagging p <= alpha
keeps the false-alarm rate on inliers at or below alpha (Vovk et al. 2005;
Bates et al. 2023, "Testing for outliers with conformal p-values").

Testing many points at once, `benjamini_hochberg` bounds the false discovery
rate instead: the expected fraction of inliers among the flagged points. The
conformal p-values of test points that share one calibration set are
dependent, but positively (PRDS; Bates et al. 2023 prove it), which is the
condition under which Benjamini-Hochberg keeps its guarantee.
"""
import numpy as np


def conformal_pvalues(calibration_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """p-values [M] of scores [M] against calibration scores [n] (both: higher = more anomalous)."""
  cal = np.sort(np.asarray(calibration_scores, np.float64))
  scores = np.asarray(scores, np.float64)
  at_least = cal.size - np.searchsorted(cal, scores, side="left")
  return (1.0 + at_least) / (cal.size + 1.0)


def benjamini_hochberg(pvalues: np.ndarray, q: float) -> np.ndarray:
  """Benjamini-Hochberg step-up at level q: a bool mask [M] of the p-values [M] it rejects.

  With the sorted p-values p_(1) <= ... <= p_(M), rejects every p <= p_(k*), where
  k* = max{k : p_(k) <= k q / M}, and nothing when no k qualifies. For independent or
  PRDS p-values, of which M0 are null (valid: P(p <= t) <= t), the false discovery rate
  E[#null rejected / max(#rejected, 1)] is at most q M0 / M <= q (Benjamini & Hochberg
  1995; Benjamini & Yekutieli 2001).
  """
  p = np.asarray(pvalues, np.float64)
  if p.ndim != 1:
    raise ValueError(f"benjamini_hochberg: pvalues must be 1-D [M], got shape {p.shape}")
  if not (isinstance(q, (int, float, np.floating)) and not isinstance(q, bool) and 0 < q < 1):
    raise ValueError(f"benjamini_hochberg(q={q!r}): q must be a number in (0, 1)")
  if np.isnan(p).any():
    raise ValueError(f"benjamini_hochberg: {int(np.isnan(p).sum())} NaN p-values; every p must be in [0, 1]")
  m = p.size
  ranked = np.sort(p)
  passed = np.flatnonzero(ranked <= q * np.arange(1, m + 1) / m)
  if passed.size == 0:
    return np.zeros(m, bool)
  # Step-up: everything up to the largest passing rank is rejected, even p-values above their
  # own line k q / M. A p-value tied with p_(k*) passes its line too, so ties all rank <= k*.
  return p <= ranked[passed[-1]]
