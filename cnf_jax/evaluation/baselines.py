"""Classical anomaly detectors on feature vectors (the paper's benchmark methods, section 5.2.2).

One interface for all of them:

  score_fn = fit(name, inliers [N, D], contrastive [M, D] or None, cfg, seed)
  score_fn(x [T, D]) -> [T] float64, higher = more anomalous

Each is fitted on the preprocessed training inliers (and, for mse_ratio, the
contrastive data) of a run and evaluated, not trained: `experiment.evaluate_and_write`
scores the test sets with them next to the flow methods. `cfg` is `config.baselines`
(see `config_lib.default_config`). With their default options kde, pca, knn, lof,
abod and mcd compute what PyOD's detector of that name computes with its defaults
(MCD with random_state = the seed) on new rows, up to rounding; the one exception is
a point that equals k - 1 of its k ABOD neighbours, NaN in PyOD (see abod_scores).
PyOD is the library the paper used; tests/test_baselines_pyod_parity.py compares
them. They are re-implementations on numpy and scikit-learn: PyOD is not needed to
run them.

  mse        mean over features of (x - mean_in)^2: a normal distribution with
             identity covariance around the inlier mean (paper 5.2.2).
  mse_ratio  mse(x, mean_in) - mse(x, mean_contrastive): the log-likelihood ratio
             log q(x) - log p(x) of two such normal distributions, up to a factor 2D
             and a constant (paper 5.2.2, "MSE-ratio").
  kde        -log density of a Gaussian kernel density estimate on the inliers
             (sklearn KernelDensity); bandwidth `kde_bandwidth` (PyOD: 1.0), or the
             median pairwise distance of the inliers when it is 0. Far from the inliers
             sklearn's tree evaluation is approximate (in PyOD too; see _kde). With
             `kde_exact` every kernel is summed exactly instead, a matrix product per block
             of rows (gaussian_kde_log_density): the tree's values wherever the tree is exact
             (raw 1,280-d CIFAR-10 features: within 3e-13 nats, about 30x faster a row,
             because in high dimensions the tree prunes nothing), the true density where it is not.
  kde_cv     kde with its bandwidth chosen on the inliers alone by likelihood cross-validation:
             each of KDE_CV_FACTORS x the median pairwise inlier distance is fitted on 80%
             of the inliers (the seed picks them) and the one that gives the other 20% the
             highest mean log density wins (ties: the larger); then refitted on them all.
             The same rule as ContrastiveFlowDetector's noise_std="auto", so that ADBench
             compares a tuned detector with a tuned density baseline. Not PyOD's.
  pca        PyOD's PCA detector: x is z-scored with the inliers' mean and standard
             deviation (`pca_standardize`), then scored sum_j |z - v_j| / r_j over all
             principal components v_j of the z-scored inliers, r_j the fraction of variance
             v_j explains (`pca_weighted`; else r_j = 1). |z - v_j| is the distance of z to
             the unit vector v_j, not to a subspace: PyOD's formula, kept for parity, so it
             depends on sklearn's sign of each v_j (largest entry positive). Components
             that explain at most 1e-12 of the variance (rank-deficient inliers: constant
             or collinear columns, fewer rows than columns) are left out; PyOD divides by
             their ratio of ~0 and scores inf or rounding noise.
  pca_recon  squared reconstruction error of x from the leading principal components
             of the inliers, as many as explain `pca_variance` of their variance (not
             PyOD's; this repository's `pca` until issue 16).
  knn        distance to the k-th nearest inlier (`knn_method`='largest', PyOD's
             default; 'mean' or 'median' of the k distances), k = `knn_k` (PyOD: 5).
  lof        local outlier factor against the inliers (sklearn LocalOutlierFactor,
             novelty=True), k = `lof_k` (PyOD: 20).
  abod       fast angle-based outlier detection (Kriegel et al. 2008; PyOD's 'fast'
             method, k = `abod_k`, PyOD: 5): minus the variance of
             <a - x, b - x> / (|a - x|^2 |b - x|^2) over all pairs (a, b) of x's k
             nearest inliers. Outliers see their neighbours within a narrow cone, so
             the variance is small and the score high.
  mcd        squared Mahalanobis distance under the minimum covariance determinant
             estimate of the inliers' location and covariance: sklearn MinCovDet, whose
             FastMCD search runs in cnf_jax.evaluation.mcd: sklearn's (and PyOD's) result
             where the supports' covariances are non-singular, ~100x faster at D = 1,280;
             where they are singular (binary or constant columns in a subset, D >= h)
             sklearn's choices follow rounding noise and the two can differ.

  pyod:<Name> the installed PyOD's detector class <Name> (pyod:IForest, pyod:ECOD, ...)
             with its defaults, random_state = the run's seed where it takes one:
             decision_function of the fitted detector. Needs the optional extra
             (pip install -e '.[pyod]').

Neighbour searches are exact and brute force: in 128 dimensions trees prune nothing.
"""
import contextlib
import importlib
import inspect
import io
import itertools
import pkgutil
import time
from typing import Callable, Dict, Optional

import ml_collections
import numpy as np
from sklearn import decomposition as sk_decomposition
from sklearn import neighbors as sk_neighbors
from sklearn import preprocessing as sk_preprocessing
from threadpoolctl import threadpool_limits

from cnf_jax.errors import UserInputError
from cnf_jax.evaluation import mcd

ScoreFn = Callable[[np.ndarray], np.ndarray]

NAMES = ("mse", "mse_ratio", "kde", "pca", "knn", "lof", "abod", "mcd", "pca_recon", "kde_cv")
# Baselines that use the contrastive (auxiliary) data.
USES_CONTRASTIVE = ("mse_ratio",)
KNN_METHODS = ("largest", "mean", "median")
# A method "pyod:<Name>" runs PyOD's detector class <Name>.
# pca leaves out the components that explain at most this fraction of the variance (see _pca).
PCA_MIN_VARIANCE_RATIO = 1e-12
PYOD_PREFIX = "pyod:"

# kde_cv's candidate bandwidths, in units of the median pairwise inlier distance (the median
# rule is 1.0); its held-out share of the inliers, and the fewest inliers it splits (below: 1.0).
KDE_CV_FACTORS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
KDE_CV_HOLDOUT = 0.2
KDE_CV_MIN_ROWS = 10

# Rows of x scored at once by the neighbour-based methods: bounds the [chunk, N] distance matrix.
_CHUNK = 2048


def default_config() -> ml_collections.ConfigDict:
  """config.baselines: the options of every baseline (PyOD's defaults where PyOD has one)."""
  c = ml_collections.ConfigDict()
  c.kde_bandwidth = 1.0       # Gaussian kernel width (PyOD KDE: 1.0); 0 = median pairwise inlier distance.
  # True: sum every kernel exactly (blocked matrix products) instead of with sklearn's tree, which
  # PyOD uses: the same density where the tree is exact, and far faster in high dimensions.
  c.kde_exact = False
  c.pca_standardize = True    # z-score with the inliers' mean and std before the PCA (PyOD: True).
  c.pca_weighted = True       # divide each component's distance by its explained variance ratio (PyOD: True).
  c.pca_variance = 0.9        # pca_recon: keep the leading components that explain this fraction, in (0, 1).
  c.knn_k = 5                 # neighbours (PyOD KNN: 5).
  c.knn_method = "largest"    # largest (k-th distance, PyOD's default) | mean | median of the k distances.
  c.lof_k = 20                # neighbours (PyOD LOF: 20).
  c.abod_k = 5                # neighbours of fast ABOD (PyOD: 5).
  # Fit MCD on a random subsample of at most this many inliers (0 = all; the seed picks them).
  # 4,500 x 128 rows take ~3 s, 4,500 x 1,280 ~20 s (one thread; benchmarks/mcd_speed.py).
  c.mcd_max_samples = 0
  c.mcd_support_fraction = 0.0  # fraction of points in the MCD support; 0 = sklearn's (n + D + 1) / 2n.
  return c


def validate(cfg: ml_collections.ConfigDict) -> None:
  """UserInputError for option values no baseline can use."""
  def positive_int(key):
    if int(cfg[key]) != cfg[key] or cfg[key] < 1:
      raise UserInputError(f"config baselines.{key}={cfg[key]!r} must be a positive integer")
  for key in ("knn_k", "lof_k", "abod_k"):
    positive_int(key)
  if cfg.abod_k < 2:
    raise UserInputError(f"config baselines.abod_k={cfg.abod_k} must be >= 2 (ABOD needs pairs of neighbours)")
  if cfg.kde_bandwidth < 0:
    raise UserInputError(f"config baselines.kde_bandwidth={cfg.kde_bandwidth} must be > 0 (or 0 for the median rule)")
  if not 0 < cfg.pca_variance < 1:
    raise UserInputError(f"config baselines.pca_variance={cfg.pca_variance} must be in (0, 1); "
                         "with 1 pca_recon keeps every component and its reconstruction error is 0")
  if cfg.knn_method not in KNN_METHODS:
    raise UserInputError(f"config baselines.knn_method={cfg.knn_method!r} is not valid; "
                         f"choose one of {', '.join(KNN_METHODS)}")
  if cfg.mcd_max_samples < 0:
    raise UserInputError(f"config baselines.mcd_max_samples={cfg.mcd_max_samples} must be >= 0 (0 = all inliers)")
  if not 0 <= cfg.mcd_support_fraction <= 1:
    raise UserInputError(f"config baselines.mcd_support_fraction={cfg.mcd_support_fraction} must be in [0, 1] "
                         "(0 = sklearn's default)")


def _as64(x: np.ndarray) -> np.ndarray:
  return np.asarray(x, np.float64)


def _in_chunks(fn: ScoreFn, x: np.ndarray, rows: int = _CHUNK) -> np.ndarray:
  """fn applied to x [T, D] `rows` rows at a time; the [T] scores concatenated."""
  return np.concatenate([fn(x[i:i + rows]) for i in range(0, len(x), rows)]) if len(x) else np.zeros(0)


def _check_neighbours(name: str, k: int, n: int) -> None:
  if k > n:
    raise UserInputError(f"baseline {name} needs {k} neighbours but there are only {n} training inliers; "
                         f"lower config.baselines.{name}_k")


def _nearest(train: np.ndarray, k: int) -> sk_neighbors.NearestNeighbors:
  return sk_neighbors.NearestNeighbors(n_neighbors=k, algorithm="brute").fit(train)


def _mse(inliers, contrastive, cfg, seed) -> ScoreFn:
  mean = inliers.mean(axis=0)
  return lambda x: np.mean((_as64(x) - mean) ** 2, axis=1)


def _mse_ratio(inliers, contrastive, cfg, seed) -> ScoreFn:
  mean_in, mean_con = inliers.mean(axis=0), contrastive.mean(axis=0)
  return lambda x: np.mean((_as64(x) - mean_in) ** 2, axis=1) - np.mean((_as64(x) - mean_con) ** 2, axis=1)


def median_pairwise_distance(x: np.ndarray, max_points: int = 2000, seed: int = 0) -> float:
  """Median Euclidean distance between distinct points of x [N, D] (a random subset of max_points)."""
  if len(x) > max_points:
    x = x[np.sort(np.random.default_rng([seed, 21]).choice(len(x), max_points, replace=False))]
  sq = np.sum(x ** 2, axis=1)
  d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
  return float(np.median(np.sqrt(d2[np.triu_indices(len(x), k=1)])))


def _kde(inliers, contrastive, cfg, seed) -> ScoreFn:
  bandwidth = cfg.kde_bandwidth or median_pairwise_distance(inliers, seed=seed)
  if cfg.get("kde_exact", False):   # .get: configs written before the option lack it
    train = _as64(inliers)
    return lambda x: -gaussian_kde_log_density(train, _as64(x), bandwidth)
  # PyOD's leaf_size (sklearn's default is 40): sklearn's tree sums are not exact far from the
  # inliers (scikit-learn issues #7492, #27186: a -log density above ~30 can be off by nats),
  # and there the value depends on the tree's leaves; the same tree gives PyOD's numbers.
  kde = sk_neighbors.KernelDensity(kernel="gaussian", bandwidth=bandwidth, leaf_size=30).fit(inliers)
  return lambda x: -kde.score_samples(_as64(x))


# The [rows, N] blocks of gaussian_kde_log_density and euclidean_distances (and ABOD's [rows, k, D]
# neighbour blocks) hold at most this many float64 entries (128 MiB), so that a large training set
# (ADBench's 100k rows) or a large k x D scores fewer rows at a time.
_BLOCK_ENTRIES = 1 << 24


def _rows_per_block(columns: int) -> int:
  """Rows of x scored at a time when each row needs `columns` entries (e.g. its distances to the
  rows of the other set), within _BLOCK_ENTRIES."""
  return max(1, min(_CHUNK, _BLOCK_ENTRIES // max(columns, 1)))


def gaussian_kde_log_density(train: np.ndarray, x: np.ndarray, bandwidth: float) -> np.ndarray:
  """Exact log density [T] at x [T, D] of the Gaussian KDE on train [N, D] with this bandwidth
  (what sklearn's KernelDensity estimates with its tree), in blocks of x's rows."""
  n, d = train.shape
  norm = np.log(n) + 0.5 * d * np.log(2 * np.pi * bandwidth ** 2)
  sq_train = np.sum(train ** 2, axis=1)

  def block(part):
    d2 = np.maximum(np.sum(part ** 2, axis=1)[:, None] + sq_train[None, :] - 2 * part @ train.T, 0.0)
    z = -0.5 * d2 / bandwidth ** 2
    peak = z.max(axis=1)
    return peak + np.log(np.exp(z - peak[:, None]).sum(axis=1)) - norm

  return _in_chunks(block, x, _rows_per_block(n))


def kde_cv_bandwidth(inliers: np.ndarray, seed: int = 0) -> tuple:
  """(bandwidth, {bandwidth: mean held-out log density}): kde_cv's likelihood cross-validation
  (see the module docstring); with fewer than KDE_CV_MIN_ROWS inliers, the median rule alone."""
  scale = median_pairwise_distance(inliers, seed=seed) if len(inliers) > 1 else 1.0
  scale = scale if scale > 0 else 1.0
  if len(inliers) < KDE_CV_MIN_ROWS:
    return scale, {}
  order = np.random.default_rng([seed, 22]).permutation(len(inliers))
  held = max(1, int(round(KDE_CV_HOLDOUT * len(inliers))))
  fit_on, held_out = inliers[np.sort(order[held:])], inliers[np.sort(order[:held])]
  values = {f * scale: float(np.mean(gaussian_kde_log_density(fit_on, held_out, f * scale))) for f in KDE_CV_FACTORS}
  best = max(values.values())
  return max(h for h, v in values.items() if v == best), values


def _kde_cv(inliers, contrastive, cfg, seed) -> ScoreFn:
  bandwidth, _ = kde_cv_bandwidth(inliers, seed)
  kde = sk_neighbors.KernelDensity(kernel="gaussian", bandwidth=bandwidth, leaf_size=30).fit(inliers)
  def score(x):
    return -kde.score_samples(_as64(x))
  score.bandwidth = bandwidth   # what was chosen, for the caller's records
  return score


def _pca(inliers, contrastive, cfg, seed) -> ScoreFn:
  # PyOD's PCA() step by step: its standardizer is a StandardScaler, and sklearn's PCA with
  # PyOD's arguments (all components, svd_solver 'auto') picks the same solver and signs.
  scaler = sk_preprocessing.StandardScaler().fit(inliers) if cfg.pca_standardize else None
  pca = sk_decomposition.PCA(random_state=seed).fit(scaler.transform(inliers) if scaler else inliers)
  components = pca.components_
  weights = pca.explained_variance_ratio_ if cfg.pca_weighted else np.ones(pca.n_components_)
  if cfg.pca_weighted:
    # Rank-deficient inliers (a constant or collinear column, fewer rows than columns) have
    # components that explain no variance: PyOD divides by their ratio of 0 (or ~1e-30 of
    # rounding) and every score becomes inf or rounding noise. They are left out here.
    kept = weights > PCA_MIN_VARIANCE_RATIO
    components, weights = components[kept], weights[kept]

  def score(x):
    z = scaler.transform(x) if scaler else x
    return np.sum(euclidean_distances(z, components) / weights, axis=1)

  return lambda x: score(_as64(x))


# euclidean_distances recomputes a pair directly where |x - y|^2 is below this fraction of
# |x|^2 + |y|^2: there the BLAS form's cancellation leaves ~1e-8 of absolute error instead of ~1e-16.
_CANCELLATION_FRACTION = 1e-4


def euclidean_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """|x_i - y_j| [T, K] for rows x [T, D] and y [K, D], float64: scipy's cdist to rounding.

  By |x|^2 + |y|^2 - 2 x.y, one matrix product per block of rows (BLAS, every core): PCA's
  1,280 components against 14,500 rows of 1,280-d features take seconds where cdist's loops
  took 40 s. Pairs close enough for cancellation to matter are recomputed as |x_i - y_j|.
  """
  sq_y = np.sum(y ** 2, axis=1)
  rows = _rows_per_block(len(y))
  out = np.empty((len(x), len(y)))
  for start in range(0, len(x), rows):
    part = x[start:start + rows]
    scale = np.sum(part ** 2, axis=1)[:, None] + sq_y[None, :]
    d2 = scale - 2 * part @ y.T
    near_i, near_j = np.nonzero(d2 < _CANCELLATION_FRACTION * scale)
    d2[near_i, near_j] = np.sum((part[near_i] - y[near_j]) ** 2, axis=1)
    out[start:start + rows] = np.sqrt(np.maximum(d2, 0.0))
  return out


def _pca_recon(inliers, contrastive, cfg, seed) -> ScoreFn:
  pca = sk_decomposition.PCA(n_components=cfg.pca_variance, svd_solver="full").fit(inliers)
  return lambda x: np.sum((_as64(x) - pca.inverse_transform(pca.transform(_as64(x)))) ** 2, axis=1)


def _knn(inliers, contrastive, cfg, seed) -> ScoreFn:
  _check_neighbours("knn", cfg.knn_k, len(inliers))
  nn = _nearest(inliers, cfg.knn_k)
  reduce = {"largest": lambda d: d[:, -1], "mean": lambda d: d.mean(axis=1),
            "median": lambda d: np.median(d, axis=1)}[cfg.knn_method]
  return lambda x: _in_chunks(lambda part: reduce(nn.kneighbors(part)[0]), _as64(x))


def _lof(inliers, contrastive, cfg, seed) -> ScoreFn:
  _check_neighbours("lof", cfg.lof_k, len(inliers))
  lof = sk_neighbors.LocalOutlierFactor(n_neighbors=cfg.lof_k, novelty=True, algorithm="brute").fit(inliers)
  # score_samples is the negated LOF: inliers near 1 -> -1, outliers larger.
  return lambda x: _in_chunks(lambda part: -lof.score_samples(part), _as64(x))


def abod_scores(x: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
  """Fast ABOD score of each x[i] [T, D] from its neighbours [T, k, D]: -var of the weighted cosines.

  The weighted cosine of a pair (a, b) is <a - x, b - x> / (|a - x|^2 |b - x|^2), over the
  k (k - 1) / 2 pairs a < b. A neighbour equal to x forms no angle; its pairs are skipped
  (PyOD does the same). A point with no valid pair (k - 1 of its neighbours equal to it) gets
  variance 0 (score 0, the maximum), where PyOD's is NaN.
  """
  diff = neighbours - x[:, None, :]                         # [T, k, D]
  gram = diff @ np.swapaxes(diff, 1, 2)                     # [T, k, k]; batched BLAS: einsum's
                                                            # loop was ~11x slower at k = 200, D = 1,280
  sq = np.einsum("tii->ti", gram)                           # [T, k] squared distances
  i, j = np.triu_indices(neighbours.shape[1], k=1)
  valid = (sq[:, i] > 0) & (sq[:, j] > 0)                   # [T, P]
  wcos = np.where(valid, gram[:, i, j] / np.where(valid, sq[:, i] * sq[:, j], 1.0), 0.0)
  count = np.maximum(valid.sum(axis=1), 1)
  mean = wcos.sum(axis=1) / count
  var = np.where(valid, (wcos - mean[:, None]) ** 2, 0.0).sum(axis=1) / count
  return -var


def abod_scores_loop(x: np.ndarray, train: np.ndarray, k: int) -> np.ndarray:
  """The same as fit('abod') with a direct loop over points and pairs (slow; for tests)."""
  out = []
  for p in np.asarray(x, np.float64):
    order = np.argsort(np.linalg.norm(train - p, axis=1), kind="stable")[:k]
    values = []
    for a, b in itertools.combinations(order, 2):
      u, v = train[a] - p, train[b] - p
      if not u.any() or not v.any():
        continue
      values.append(np.dot(u, v) / (np.dot(u, u) * np.dot(v, v)))
    out.append(-np.var(values) if values else 0.0)
  return np.asarray(out)


def _abod(inliers, contrastive, cfg, seed) -> ScoreFn:
  _check_neighbours("abod", cfg.abod_k, len(inliers))
  nn = _nearest(inliers, cfg.abod_k)

  def score(part):
    index = nn.kneighbors(part, return_distance=False)      # [T, k]
    return abod_scores(part, inliers[index])

  # A scored row holds its neighbours and their differences [k, D] and k(k - 1)/2 pair values:
  # chunks of 2,048 rows at k = 200 on 1,280-d features took ~11 GB and were OOM-killed.
  rows = _rows_per_block(cfg.abod_k * max(inliers.shape[1], cfg.abod_k))
  return lambda x: _in_chunks(score, _as64(x), rows)


def _mcd(inliers, contrastive, cfg, seed) -> ScoreFn:
  fit_on = inliers
  if cfg.mcd_max_samples and len(inliers) > cfg.mcd_max_samples:
    pick = np.random.default_rng([seed, 22]).choice(len(inliers), cfg.mcd_max_samples, replace=False)
    fit_on = inliers[np.sort(pick)]
  if len(fit_on) <= fit_on.shape[1]:
    raise UserInputError(f"baseline mcd needs more inliers ({len(fit_on)}) than features ({fit_on.shape[1]}); "
                         "raise config.baselines.mcd_max_samples or drop mcd from config.methods")
  # One thread: multi-threaded LAPACK spent its time synchronising on D x D matrices this small
  # (sklearn's MinCovDet on a busy 2-core machine, 2,000 x 128: 110 s with the default threads,
  # 6 s with one), and sweeps run one process per core.
  with threadpool_limits(1):
    fitted = mcd.fit_min_cov_det(fit_on, cfg.mcd_support_fraction or None, random_state=seed)
  return lambda x: fitted.mahalanobis(_as64(x))


def is_baseline(name: str) -> bool:
  """Whether method `name` is a baseline (one of NAMES or pyod:<Name>), not a flow method."""
  return name in NAMES or name.startswith(PYOD_PREFIX)


def pyod_detector(name: str, seed: int = 0):
  """An unfitted PyOD detector for method name 'pyod:<Name>': class <Name> with its defaults,
  random_state=seed where it takes one. UserInputError (one line) without pyod or such a class."""
  class_name = name[len(PYOD_PREFIX):]
  try:
    import pyod.models
    from pyod.models.base import BaseDetector
  except ImportError:
    raise UserInputError(f"method {name!r} needs PyOD, which is not installed: pip install -e '.[pyod]'") from None
  # Most classes live in pyod.models.<name in lower case> (IForest in iforest); the others
  # (AutoEncoder in auto_encoder, ...) are looked for in every module, similar names first.
  modules = sorted((m.name for m in pkgutil.iter_modules(pyod.models.__path__)),
                   key=lambda m: m.replace("_", "") != class_name.lower().replace("_", ""))
  unimported = []
  for module_name in modules:
    try:
      # Some modules print an install hint for their own optional dependency (combo, xgboost).
      with contextlib.redirect_stdout(io.StringIO()):
        module = importlib.import_module(f"pyod.models.{module_name}")
    except ImportError as e:
      unimported.append(f"{module_name} ({e})")
      continue
    cls = getattr(module, class_name, None)
    if isinstance(cls, type) and issubclass(cls, BaseDetector) and cls is not BaseDetector:
      break
  else:
    raise UserInputError(f"method {name!r}: PyOD {pyod.__version__} has no detector class {class_name!r} in "
                         "pyod.models (case-sensitive, e.g. pyod:IForest, pyod:ECOD, pyod:OCSVM)"
                         + (f"; modules that did not import: {', '.join(unimported)}" if unimported else ""))
  kwargs = {"random_state": seed} if "random_state" in inspect.signature(cls).parameters else {}
  try:
    return cls(**kwargs)
  except (TypeError, ValueError) as e:
    raise UserInputError(f"method {name!r}: PyOD's {class_name} cannot be built with its defaults: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _pyod(name, inliers, seed) -> ScoreFn:
  detector = pyod_detector(name, seed).fit(inliers)
  return lambda x: np.asarray(detector.decision_function(_as64(x)), np.float64)


_FITS = {"mse": _mse, "mse_ratio": _mse_ratio, "kde": _kde, "pca": _pca, "knn": _knn, "lof": _lof,
         "abod": _abod, "mcd": _mcd, "pca_recon": _pca_recon, "kde_cv": _kde_cv}


def fit(name: str, inliers: np.ndarray, contrastive: Optional[np.ndarray] = None,
        cfg: Optional[ml_collections.ConfigDict] = None, seed: int = 0) -> ScoreFn:
  """Fits baseline `name` on inliers [N, D] (and contrastive [M, D]); returns x [T, D] -> scores [T].

  Scores are float64; higher means more anomalous. `seed` fixes the random parts
  (MCD's subsample and starts, the KDE median rule's subset).
  """
  if name.startswith(PYOD_PREFIX):
    return _pyod(name, _as64(inliers), seed)
  if name not in _FITS:
    raise UserInputError(f"unknown baseline {name!r}; choose one of {', '.join(NAMES)}, or pyod:<Name>")
  cfg = default_config() if cfg is None else cfg
  if name in USES_CONTRASTIVE and contrastive is None:
    raise UserInputError(f"baseline {name} needs contrastive data but the task provides none; drop it from config.methods")
  return _FITS[name](_as64(inliers), None if contrastive is None else _as64(contrastive), cfg, seed)


def score_sets(names, inliers: np.ndarray, contrastive: Optional[np.ndarray], sets: Dict[str, np.ndarray],
               cfg: Optional[ml_collections.ConfigDict] = None, seed: int = 0, progress: bool = True):
  """Fits each baseline once and scores every named set.

  Returns ({set name: {baseline: scores [T]}}, {baseline: seconds to fit and score}).
  progress: a progress line per baseline (`training.progress`; silenced by its set_quiet).
  """
  from cnf_jax.training.progress import Progress
  scores: Dict[str, Dict[str, np.ndarray]] = {s: {} for s in sets}
  seconds = {}
  bar = Progress(len(names), "baselines", unit="methods") if progress and names else None
  for i, name in enumerate(names):
    start = time.perf_counter()
    score_fn = fit(name, inliers, contrastive, cfg, seed)
    for set_name, x in sets.items():
      scores[set_name][name] = score_fn(x)
    seconds[name] = round(time.perf_counter() - start, 3)
    if bar is not None:
      bar.update(i + 1, last=name)
  if bar is not None:
    bar.close()
  return scores, seconds
