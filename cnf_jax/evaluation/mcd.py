"""Minimum covariance determinant (FastMCD) that stays fast on high-dimensional features.

FastMCD (Rousseeuw and Van Driessen, 1999) looks for the h of n rows whose covariance has the
smallest determinant: random starts, each improved by C-steps (take the h rows closest to the
current estimate in Mahalanobis distance; the determinant cannot grow). This module runs it with
scikit-learn's schedule and random draws (subsets of about 300 rows with 500 starts in all, the
10 best of each subset refined on 1,500 rows, the 10 best of those on all rows), so that where
every support's covariance is non-singular it returns what `sklearn.covariance.fast_mcd` returns
for the same `random_state`, up to rounding (tests/test_mcd.py). `fit_min_cov_det` then applies
sklearn's own consistency correction and re-weighting, as `MinCovDet.fit` does.

Why not sklearn's search itself: it inverts each D x D covariance with `scipy.linalg.pinvh`, whose
QR-algorithm eigendecomposition takes ~2 s at D = 1,280 on one core, about 1,300 times a fit:
42 minutes for one CIFAR-10 class of raw EfficientNet features. Here
  - a support of h <= D rows has a singular covariance, so its log-determinant is -inf exactly
    (sklearn reads it from an LU factorisation, whose sign and size on a singular matrix are
    rounding noise, and then iterates on that noise), and its pseudo-inverse comes from the
    h x h Gram matrix of the centred rows instead of a D x D eigendecomposition;
  - a non-singular covariance is whitened with its Cholesky factor, which gives its
    log-determinant too;
  - an estimate's whitening is computed only when distances under it are needed.
Where the subsets' supports are singular (h_subset <= D: D above ~190 for a 4,500-row class),
every start's determinant there is zero, all tie, np.argsort's order of the ties picks the
starts that go on, and the C-steps on all rows (non-singular supports whenever N > D) do the
work. Singular supports also come from data with binary or often-constant columns, whatever D.
Results there can differ from sklearn's, whose choices follow rounding noise: on ADBench 224 of 258
fits gave sklearn's AUROC, the others moved both ways (benchmarks/results/adbench/README.md); on
4,500 x 384 Gaussian rows the final log-determinants (~ -435) differed by 0.02, either way.
"""
import dataclasses
import math
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import scipy.linalg
from sklearn import covariance as sk_covariance
from sklearn.utils import check_random_state

# sklearn's schedule (sklearn.covariance.fast_mcd), kept so that the random draws match.
_SUBSET_ROWS = 300         # rows per subset when n > 500
_TOTAL_STARTS = 500        # random starts over all subsets
_BEST_PER_SUBSET = 10
_MERGED_ROWS = 1500
_BEST_MERGED = 10
_SMALL_STARTS = 30         # n <= 500: random starts on all rows
_SMALL_BEST = 10
_FIRST_STEPS = 2           # C-steps for a random start
_MAX_STEPS = 30            # C-steps for a start from an earlier estimate


@dataclasses.dataclass
class _Estimate:
  """Location and covariance of the rows `support` [h] (indices) of `data` [N, D]: their mean [D],
  the lower Cholesky factor [D, D] of their (biased, 1/h) covariance and its log-determinant;
  factor None and logdet -inf when the covariance is singular. Only indices are kept, not the
  rows: a fit holds ~150 candidates of up to ~1,000 rows of 1,280 features."""
  data: np.ndarray
  support: np.ndarray
  location: np.ndarray
  factor: Optional[np.ndarray]
  logdet: float

  @classmethod
  def of(cls, data: np.ndarray, support: np.ndarray) -> "_Estimate":
    rows = data[support]
    location = rows.mean(axis=0)
    h, d = rows.shape
    # h <= D rows span at most h - 1 dimensions: a singular covariance, determinant 0.
    factor = _cholesky(_covariance(rows, location)) if h > d else None
    logdet = -math.inf if factor is None else 2.0 * float(np.sum(np.log(np.diag(factor))))
    return cls(data, support, location, factor, logdet)

  def covariance(self) -> np.ndarray:
    """[D, D] the support's covariance, normalised by h (sklearn's empirical_covariance)."""
    return _covariance(self.data[self.support], self.location)

  def whitener(self) -> np.ndarray:
    """[D, r] W with (x - location) pinv(covariance) (x - location) = |(x - location) W|^2.

    Non-singular covariance: W = L^-T from its Cholesky factor L. Otherwise the pseudo-inverse
    that scipy.linalg.pinvh gives (eigenvalues up to D * eps * the largest one are dropped),
    from the smaller of the h x h Gram matrix and the D x D covariance."""
    h, d = len(self.support), self.data.shape[1]
    if self.factor is not None:
      return scipy.linalg.solve_triangular(self.factor, np.eye(d), lower=True, check_finite=False).T
    if h <= d:
      # C = Y^T Y / h and G = Y Y^T / h share their non-zero eigenvalues; G u = lam u gives
      # C's eigenvector Y^T u / sqrt(h lam), so W's columns are Y^T u / (sqrt(h) lam).
      centred = self.data[self.support] - self.location
      lam, u = scipy.linalg.eigh(centred @ centred.T / h, driver="evd", check_finite=False)
      keep = _above_pinvh_cutoff(lam, d)
      return centred.T @ (u[:, keep] / (math.sqrt(h) * lam[keep]))
    lam, v = scipy.linalg.eigh(self.covariance(), driver="evd", check_finite=False)
    keep = _above_pinvh_cutoff(lam, d)
    return v[:, keep] / np.sqrt(lam[keep])

  def distances(self, x: np.ndarray, location: Optional[np.ndarray] = None) -> np.ndarray:
    """[N] squared Mahalanobis distances of x [N, D] under this covariance, around `location`
    (default: this estimate's)."""
    location = self.location if location is None else location
    return np.square((x - location) @ self.whitener()).sum(axis=1)


def _covariance(rows: np.ndarray, location: np.ndarray) -> np.ndarray:
  centred = rows - location
  return centred.T @ centred / len(rows)


def _above_pinvh_cutoff(eigenvalues: np.ndarray, d: int) -> np.ndarray:
  """[r] bool: the eigenvalues of a D x D covariance that scipy.linalg.pinvh keeps (above
  D * eps * the largest in magnitude); only positive ones, as the covariance is PSD."""
  return eigenvalues > d * np.finfo(np.float64).eps * np.max(np.abs(eigenvalues), initial=0.0)


def _cholesky(matrix: np.ndarray) -> Optional[np.ndarray]:
  """Lower Cholesky factor, or None when the matrix is not numerically positive definite."""
  try:
    return scipy.linalg.cholesky(matrix, lower=True, check_finite=False)
  except np.linalg.LinAlgError:
    return None


@dataclasses.dataclass
class _Candidate:
  """One start's result: its estimate and its distances (computed on request: only the last
  stage uses them)."""
  estimate: _Estimate
  distances: Callable[[], np.ndarray]


def _closest(distances: np.ndarray, h: int) -> np.ndarray:
  return np.argpartition(distances, h - 1)[:h]


def _c_steps(x: np.ndarray, h: int, start: Union[np.random.RandomState, _Estimate], max_steps: int) -> _Candidate:
  """C-steps on x [N, D] with supports of h rows, from a random support (`start` a RandomState)
  or from an earlier estimate, until the determinant stops falling or max_steps. Which result
  and which distances are returned in each case follows sklearn's _c_step: the distances use
  the final location and the covariance that chose the final support."""
  if isinstance(start, _Estimate):
    support = _closest(start.distances(x), h)
  else:
    support = start.permutation(len(x))[:h]
  estimate = _Estimate.of(x, support)
  chooser = estimate   # the estimate whose covariance the final distances use
  previous: Optional[_Candidate] = None
  steps = max_steps
  while previous is None or estimate.logdet < previous.estimate.logdet:
    if steps == 0 or estimate.logdet == -math.inf:
      break
    distances = estimate.distances(x)
    previous = _Candidate(estimate, lambda d=distances: d)
    chooser = estimate
    estimate = _Estimate.of(x, _closest(distances, h))
    steps -= 1

  final_location = estimate.location
  current = _Candidate(estimate, lambda: chooser.distances(x, final_location))
  previous_logdet = math.inf if previous is None else previous.estimate.logdet
  if steps == 0 or estimate.logdet == -math.inf or np.allclose(estimate.logdet, previous_logdet):
    return current
  return previous   # the determinant grew, by rounding: keep the estimate before that step


def _best(candidates: Sequence[_Candidate], select: int) -> List[_Candidate]:
  """The `select` candidates of smallest log-determinant (sklearn's argsort, ties included)."""
  order = np.argsort([c.estimate.logdet for c in candidates])[:select]
  return [candidates[i] for i in order]


def fast_mcd(x: np.ndarray, support_fraction: Optional[float] = None,
             random_state=None) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Raw MCD estimate of x [N, D] float64, as sklearn.covariance.fast_mcd.

  support_fraction: h = support_fraction * N rows (None: ceil((N + D + 1) / 2)).
  Returns location [D], covariance [D, D], support [N] bool, distances [N] (squared Mahalanobis).
  """
  x = np.asarray(x, dtype=np.float64)
  rng = check_random_state(random_state)
  n, d = x.shape
  if support_fraction is None:
    h = min(int(math.ceil(0.5 * (n + d + 1))), n)
  else:
    h = int(support_fraction * n)
  if d == 1:   # sklearn's exact one-dimensional search: no matrices to invert
    return sk_covariance.fast_mcd(x, support_fraction=support_fraction, random_state=rng)

  if n > 500:
    n_subsets = n // _SUBSET_ROWS
    subset_rows = n // n_subsets
    shuffle = rng.permutation(n)
    h_subset = int(math.ceil(subset_rows * (h / float(n))))
    starts_per_subset = max(10, _TOTAL_STARTS // n_subsets)
    starts: List[_Estimate] = []
    for i in range(n_subsets):
      subset = x[shuffle[i * subset_rows:(i + 1) * subset_rows]]
      found = [_c_steps(subset, h_subset, rng, _FIRST_STEPS) for _ in range(starts_per_subset)]
      starts += [c.estimate for c in _best(found, _BEST_PER_SUBSET)]

    merged_rows = min(_MERGED_ROWS, n)
    h_merged = int(math.ceil(merged_rows * (h / float(n))))
    selection = rng.permutation(n)[:merged_rows]
    merged_x = x[selection]   # one copy: every candidate's estimate refers to it
    merged = _best([_c_steps(merged_x, h_merged, s, _MAX_STEPS) for s in starts],
                   _BEST_MERGED if n > _MERGED_ROWS else 1)
    if n < _MERGED_ROWS:
      best = merged[0]
      support = np.zeros(n, dtype=bool)
      support[selection[best.estimate.support]] = True
      distances = np.zeros(n)
      distances[selection] = best.distances()
      return best.estimate.location, best.estimate.covariance(), support, distances
    best = _best([_c_steps(x, h, c.estimate, _MAX_STEPS) for c in merged], 1)[0]
  else:
    found = [_c_steps(x, h, rng, _FIRST_STEPS) for _ in range(_SMALL_STARTS)]
    best = _best([_c_steps(x, h, c.estimate, _MAX_STEPS) for c in _best(found, _SMALL_BEST)], 1)[0]
  support = np.zeros(n, dtype=bool)
  support[best.estimate.support] = True
  return best.estimate.location, best.estimate.covariance(), support, best.distances()


def fit_min_cov_det(x: np.ndarray, support_fraction: Optional[float] = None,
                    random_state=None) -> sk_covariance.MinCovDet:
  """A fitted sklearn MinCovDet on x [N, D]: this module's fast_mcd for the raw estimate, then
  MinCovDet's consistency correction and re-weighting, as MinCovDet.fit does after its own
  fast_mcd. Its `mahalanobis(x)` scores new rows."""
  x = np.asarray(x, dtype=np.float64)
  mcd = sk_covariance.MinCovDet(support_fraction=support_fraction, random_state=random_state)
  location, covariance, support, distances = fast_mcd(x, support_fraction, random_state)
  mcd.n_features_in_ = x.shape[1]
  mcd.raw_location_, mcd.raw_covariance_, mcd.raw_support_ = location, covariance, support
  mcd.location_, mcd.support_, mcd.dist_ = location, support, distances
  mcd.correct_covariance(x)
  mcd.reweight_covariance(x)
  return mcd
