"""Scores and metrics. Anomaly scores are higher for more anomalous inputs (plan.anomaly_scores)."""
import functools
from typing import Callable, Dict

import jax
import numpy as np
from sklearn import metrics as sk_metrics

from cnf_jax.flows import Flow


def apply_in_chunks(fn: Callable[[np.ndarray], jax.Array], x: np.ndarray, chunk: int) -> np.ndarray:
  """fn over x [N, D] in chunks of exactly `chunk` rows; returns the concatenated [N] as float64.

  The last chunk is zero-padded to `chunk` rows (and the padding dropped), so a jitted
  `fn` compiles once for every N.
  """
  out = []
  for start in range(0, len(x), chunk):
    part = x[start:start + chunk]
    n = len(part)
    if n < chunk:
      part = np.concatenate([part, np.zeros((chunk - n, x.shape[1]), np.float32)])
    out.append(np.asarray(fn(part))[:n])
  return np.concatenate(out).astype(np.float64)


@functools.lru_cache(maxsize=32)
def jitted_log_prob(model: Flow):
  """jit(log_prob)(variables, x [N, D]) -> [N] of `model`, one compiled program per architecture."""
  return jax.jit(lambda variables, x: model.apply(variables, x, method=Flow.log_prob))


def make_log_prob_fn(model: Flow, batch_size: int) -> Callable[[dict, np.ndarray], np.ndarray]:
  """Returns log_prob(variables, x [N, D]) -> [N] (numpy), evaluated in chunks of at most batch_size.

  The compiled program is shared by every caller with the same architecture (runs of a
  sweep, refits of a detector), so scoring compiles once per architecture and chunk shape.
  """
  apply = jitted_log_prob(model)

  def log_prob(variables: dict, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return apply_in_chunks(lambda part: apply(variables, part), x, min(batch_size, len(x)))

  return log_prob


def _checked(scores: np.ndarray) -> np.ndarray:
  """Scores as float64 with +-inf clipped to the largest finite values (zero density ranks as
  most anomalous); NaN scores mean a broken model and raise instead of being silently ranked."""
  scores = np.asarray(scores, np.float64)
  if np.isnan(scores).any():
    raise ValueError(f"{int(np.isnan(scores).sum())} anomaly scores are NaN; the model is broken")
  return np.clip(scores, np.finfo(np.float64).min, np.finfo(np.float64).max)


def auroc(scores: np.ndarray, is_anomaly: np.ndarray) -> float:
  """Area under the ROC curve [0, 1] with anomalies as the positive class (0.5 = chance)."""
  return float(sk_metrics.roc_auc_score(np.asarray(is_anomaly, bool), _checked(scores)))


def aupr(scores: np.ndarray, is_anomaly: np.ndarray) -> float:
  """Area under the precision-recall curve of the anomalies (average precision, step-wise, no
  interpolation); chance level is the anomaly fraction, so it shows what AUROC hides when
  anomalies are rare."""
  return float(sk_metrics.average_precision_score(np.asarray(is_anomaly, bool), _checked(scores)))


def fpr_at_tpr(scores: np.ndarray, is_anomaly: np.ndarray, tpr: float = 0.95) -> float:
  """Fraction of inliers flagged when the threshold flags `tpr` of the anomalies (FPR95 for
  tpr=0.95): the false-alarm rate at the operating point a deployment would use. Lower is
  better; the threshold is the largest score that still reaches `tpr` (ties count as flagged)."""
  scores, is_anomaly = _checked(scores), np.asarray(is_anomaly, bool)
  fpr, rates, _ = sk_metrics.roc_curve(is_anomaly, scores, drop_intermediate=False)
  return float(fpr[np.searchsorted(rates, tpr, side="left")])


# The metrics every run records per method: results.json["auroc"], ["aupr"], ["fpr95"].
METRICS = {"auroc": auroc, "aupr": aupr, "fpr95": fpr_at_tpr}
