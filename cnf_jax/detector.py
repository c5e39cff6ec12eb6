"""ContrastiveFlowDetector: a contrastive normalizing flow as a scikit-learn / PyOD style detector.

  det = ContrastiveFlowDetector().fit(X_train)        # X_train [N, D], inliers (mostly)
  det.decision_function(X)                             # [M] anomaly scores, higher = more anomalous
  det.pvalues(X)                                       # [M] conformal p-values
  det.predict(X, alpha=0.01)                           # [M] 0 = inlier, 1 = anomaly
  det.predict(X, fdr=0.1)                              # [M] Benjamini-Hochberg on the p-values
  det.export("scorer.npz")                             # the scorer as one jax.export program (numpy + jax only)

PyOD's BaseDetector API, with pyod 3.6.7's semantics and no pyod at run time
(tests/test_pyod_parity.py compares the two when pyod is installed):
`predict(X, return_confidence=True)`, `predict_proba(X, method='linear'|'unify')`
[M, 2], `predict_confidence(X)` (Perini et al.'s ExCeeD), `predict_with_rejection(X,
T=32, return_stats=False, ...)` (-2 = rejected), `compute_rejection_stats`,
`fit_predict(X)` (= labels_) and the deprecated `fit_predict_score(X, y)`. All of them
work from the training scores decision_scores_, threshold_ and contamination. Pickling a
fitted detector works: it holds numpy weights, nothing compiled.

Conventions (PyOD's): `decision_function` is an anomaly score (higher = more
anomalous), `predict` returns 0/1 with 1 = anomaly, `decision_scores_` are the
scores of the training data, `threshold_` is their (1 - contamination)
quantile and `labels_` their 0/1 labels. `score_samples` follows
scikit-learn's meaning (lower = more abnormal): it is -decision_function, i.e.
log p(x) for methods cf and flow.

Methods (the models trained: `cnf_jax.training.plan`, as in a CLI run):
  cf          one flow trained with the contrastive loss (eq. 3, clamp eps) against
              the contrastive data; score -log p_cf(x).
  flow        one flow trained by maximum likelihood; score -log p(x).
  flow_ratio  a flow on the inliers and one on the contrastive data; score
              log p_contrastive(x) - log p_flow(x).
Contrastive data: an array [M, D], or "permute" (default): every training
batch with each column shuffled independently (paper 5.4, `cnf_jax.training.contrastive`).

Conformal p-values: a `calibration_fraction` of X is held out of training; for
a new x, p(x) = (1 + #{calibration scores >= score(x)}) / (n_cal + 1). If x is
exchangeable with the calibration inliers, P(p(x) <= alpha) <= alpha, so
`predict(X, alpha=a)` flags at most a fraction a of such inliers on average.
`predict(X, fdr=q)` tests all rows of X together instead: Benjamini-Hochberg at
level q keeps the expected fraction of inliers among the flagged rows at or
below q (conformal p-values sharing a calibration set are PRDS, Bates et al. 2023).
Nothing else is fitted on the calibration split (not even the preprocessing),
so the score function is independent of it, which the guarantee needs.

Training is the project's one loop (`cnf_jax.training.loop.fit_models`: a jitted
`lax.scan` over chunks of train steps) on the config `config()` returns, with the
model plan, seeds and batch streams of a CLI run: a detector and `python -m
cnf_jax.main` with the same settings and training rows train the same flows
(tests/test_detector.py). Compiled programs are cached per architecture and shape, so
refitting on new data of the same width does not recompile.
"""
import dataclasses
import json
import math
import numbers
import os
import warnings
import zipfile
from typing import Dict, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from scipy.optimize import brentq
from scipy.special import erf
from scipy.stats import binom
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.metrics import precision_score, roc_auc_score
from sklearn.utils.validation import check_is_fitted

from cnf_jax import exported
from cnf_jax.data import preprocessing
from cnf_jax.errors import NonFiniteLossError, UserInputError
from cnf_jax.evaluation import metrics
from cnf_jax.evaluation import selection
from cnf_jax.evaluation.conformal import benjamini_hochberg, conformal_pvalues
from cnf_jax.experiments import config_lib
from cnf_jax.files import atomic_write, check_writable_path
from cnf_jax.flows import BLOCK_TYPES, Flow, flow_from_config, init_flow
from cnf_jax.flows.flow import COMPUTE_DTYPES, resolve_compute_dtype
from cnf_jax.training import loop
from cnf_jax.training import objectives
from cnf_jax.training import plan

FORMAT = "cnf_jax.ContrastiveFlowDetector/1"
METHODS = ("cf", "flow", "flow_ratio")
# Steps per compiled scan: long enough to hide dispatch, short enough to stop soon on a NaN.
CHUNK_STEPS = 100
# Rows per scoring call; inputs are padded to it so one compilation serves every N.
SCORE_CHUNK = 1024
# Fraction of the training split held out to set eps="auto" (the quantile is taken on it),
# with a fixed noise; with noise_std="auto" the chosen noise candidate's NOISE_HOLDOUT split is.
EPS_HOLDOUT = 0.1
DIVERGED_HINT = "Lower lr, raise noise_std, or check the data for extreme values."
# noise_std="scaled" (and "auto" on too few rows): this many standard deviations of a typical
# normalised column (the best fixed value on ADBench's dev sets, benchmarks/results/adbench).
NOISE_SCALE = 0.6
# noise_std="auto": the candidates, in the same unit, and the share of the training rows held
# out to compare them by their log-likelihood (likelihood cross-validation, as for a KDE's
# bandwidth). Below NOISE_MIN_ROWS training rows the held-out mean is too noisy: "scaled".
NOISE_GRID = (0.03, 0.1, 0.3, 0.6, 1.0)
NOISE_HOLDOUT = 0.2
NOISE_MIN_ROWS = 20
PROBA_METHODS = ("linear", "unify")
SCORINGS = ("roc_auc_score", "prc_n_score")


class NonNumericInputError(UserInputError, TypeError):
  """Non-numeric cells; also a TypeError, as scikit-learn raises for them."""


class UnsupportedScoringError(UserInputError, NotImplementedError):
  """fit_predict_score with an unknown metric; also a NotImplementedError, as PyOD raises for it."""


def _is_number(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


NOISE_RULES = ("auto", "scaled", "silverman")


def noise_spread(normalize: str, x_train: np.ndarray) -> float:
  """The unit of the noise rules: the root-mean-square standard deviation of the normalised
  columns x_train [N, D]; exactly 1 with 'standardize' (no float rounding of that 1)."""
  if normalize == "standardize":
    return 1.0
  return float(np.sqrt(np.mean(np.var(x_train, axis=0, dtype=np.float64))))


def resolve_noise_std(noise_std, normalize: str, x_train: np.ndarray) -> float:
  """The training noise for noise_std (a number, 'scaled' or 'silverman') on the normalised rows
  x_train [N, D]; for 'auto' the value used when there are too few rows to choose (= 'scaled').

  'scaled' is NOISE_SCALE times noise_spread: exactly NOISE_SCALE with 'standardize', the same
  fraction of the data's spread on the sphere or unnormalised.
  'silverman' is Silverman's rule of thumb for a Gaussian kernel density's bandwidth,
  spread * (4 / ((D + 2) N)) ** (1 / (D + 4)): less noise for many rows in few dimensions.
  """
  if not isinstance(noise_std, str):
    return float(noise_std)
  n, d = x_train.shape
  spread = noise_spread(normalize, x_train)
  if noise_std == "silverman":
    return spread * (4.0 / ((d + 2) * n)) ** (1.0 / (d + 4))
  return NOISE_SCALE * spread


def choose_noise(heldout_log_lik: Dict[float, float]) -> float:
  """The candidate noise with the highest mean held-out log-likelihood ({noise: value}; a
  non-finite value never wins); ties go to the larger noise (the smoother density)."""
  finite = {k: v for k, v in heldout_log_lik.items() if math.isfinite(v)}
  if not finite:
    raise UserInputError("every candidate noise level diverged or gave a non-finite held-out likelihood; "
                         "pass a fixed noise_std (e.g. 0.6) and check the data for extreme values")
  return max(finite, key=lambda k: (finite[k], k))


def select_detector(X, candidates, *, contrastive=None, validation_fraction: float = 0.1, **common):
  """Fits one detector per candidate and keeps the one the label-free criterion prefers.

  X [N, D]: training rows; candidates: a list of dicts of constructor arguments (e.g.
  [{"method": "cf", "noise_std": 0.1}, {"method": "flow", "steps": 2000}]), each combined with
  `common` and validation_fraction (the held-out share of X and of the contrastive rows);
  contrastive: as in fit. The criterion is each fit's selection_criterion_: how well its
  score ranks held-out contrastive rows (or column-permuted held-out rows) above held-out
  rows of X. Nothing else is used, no label and no test row; ties go to the first candidate.
  Returns (the chosen fitted detector, [{**candidate, "criterion": value}] in the given order).
  """
  if not candidates:
    raise UserInputError("select_detector needs at least one candidate (a dict of constructor arguments)")
  if not 0 < validation_fraction < 1:
    raise UserInputError(f"select_detector(validation_fraction={validation_fraction}): must be in (0, 1); the "
                         "criterion is computed on the held-out rows")
  best, table = None, []
  for candidate in candidates:
    det = ContrastiveFlowDetector(**{**common, **candidate, "validation_fraction": validation_fraction})
    det.fit(X, contrastive=contrastive)
    table.append({**candidate, "criterion": det.selection_criterion_})
    if best is None or det.selection_criterion_ > best.selection_criterion_:
      best = det
  return best, table


class ContrastiveFlowDetector(OutlierMixin, BaseEstimator):
  """Anomaly detector: a (contrastive) normalizing flow on feature vectors or table rows.

  Args (all keyword-only; see the module docstring for the methods):
    method: 'cf' | 'flow' | 'flow_ratio'.
    contamination: expected fraction of anomalies in the training data; sets
      `threshold_` and the default `predict`. In (0, 0.5].
    eps: clamp of the contrastive loss (a log-density), or 'auto': the paper's
      10% quantile of held-out inlier log-densities under a maximum-likelihood
      flow, plus ln 10 (trains that extra flow). Used by method 'cf' only.
    normalize: 'standardize' (per column, for tables), 'sphere' (unit L2 norm,
      for embeddings, paper 5.2.1) or 'none'.
    noise_std: standard deviation of the Gaussian noise added to training batches, in the
      units of the normalised columns: a number >= 0, or a rule, all in multiples of the
      root-mean-square standard deviation of the normalised training columns (1 with
      'standardize', about 1 / sqrt(D) or less on the sphere, so unit vectors are not
      drowned in noise: a plain 0.6 on 512-d embeddings gave AUROC 41 on MVTec pill):
      'auto' (default): chosen per data set by likelihood cross-validation, as a kernel
      density's bandwidth: maximum-likelihood flows with each of NOISE_GRID (0.03, 0.1, 0.3,
      0.6, 1.0) train on the training rows less NOISE_HOLDOUT (20%) of them (one vmapped
      program), and the one with the highest mean log-likelihood of the held-out rows wins
      (ties: the larger). No label is used. Little noise for many rows in few dimensions
      (fine structure, e.g. ADBench Wilt: AUROC 93 against 43 at 0.6), much for small
      tables and integer-coded columns. It costs these five extra flows (they also serve as
      eps="auto"'s probe); with fewer than NOISE_MIN_ROWS (20) training rows it is 'scaled'.
      noise_selection_ holds each candidate's held-out log-likelihood.
      'scaled': NOISE_SCALE = 0.6, the best fixed value on ADBench's dev sets (the default
      before 'auto'). 'silverman': Silverman's bandwidth rule (resolve_noise_std), less
      noise for more rows. The fitted value is noise_std_.
    block, num_blocks, hidden: the flow (coupling block type, depth,
      conditioner hidden widths).
    compute_dtype: the conditioner's matrix products, 'auto' (default: bfloat16 with float32
      accumulation on a CPU with AMX-BF16, where it trains about 2x faster, float32 elsewhere;
      flows.flow.resolve_compute_dtype), 'float32' or 'bfloat16'. Pin it for scores that do
      not depend on the machine's CPU; the fitted value is compute_dtype_.
    steps, batch_size, lr, warmup_steps, grad_clip: training (Adam, linear
      warm-up then cosine decay). The contrastive batch has `batch_size` rows.
    calibration_fraction: fraction of X held out of training for conformal
      p-values (0 disables `pvalues` until `calibrate` is called).
    validation_fraction, patience: early stopping, as flowjax's fit_to_data: this
      fraction of the training rows (and of the contrastive rows) is held out, each
      flow's own objective on them is evaluated every 100 steps, the best parameters
      are kept, and with patience > 0 a flow stops after that many evaluations
      without improvement. 0 (default): train all `steps`.
    random_state: int seed of the split, initialisation, batches, noise and
      permutations; a fit is deterministic given it.

  Fitted attributes: n_features_in_, constant_columns_ (indices of the columns constant in
  the training rows: dropped, the flow models the others, new rows are scored without them),
  kept_columns_, decision_scores_ [N], threshold_, labels_
  [N] (and PyOD's private _mu, _sigma: the training scores' mean and std), eps_ (float or
  None), noise_std_ (the training noise used), compute_dtype_ ('float32' or 'bfloat16'),
  noise_selection_ {candidate noise: mean held-out log-likelihood} (noise_std='auto'; empty
  otherwise), calibration_scores_ [n_cal], loss_history_
  {model: [steps trained]}, variables_ {model: flax variables}, preprocessing_
  (method, stats), validation_ {model: early-stopping record} (empty without
  validation_fraction).
  """

  def __init__(self, *, method="cf", contamination=0.1, eps="auto", normalize="standardize",
               noise_std="auto", block="allinone", num_blocks=4, hidden=(128, 128), compute_dtype="auto",
               steps=1000, batch_size=256, lr=1e-3, warmup_steps=50, grad_clip=10.0, calibration_fraction=0.2,
               validation_fraction=0.0, patience=0, random_state=0):
    self.method = method
    self.contamination = contamination
    self.eps = eps
    self.normalize = normalize
    self.noise_std = noise_std
    self.block = block
    self.num_blocks = num_blocks
    self.hidden = hidden
    self.compute_dtype = compute_dtype
    self.steps = steps
    self.batch_size = batch_size
    self.lr = lr
    self.warmup_steps = warmup_steps
    self.grad_clip = grad_clip
    self.calibration_fraction = calibration_fraction
    self.validation_fraction = validation_fraction
    self.patience = patience
    self.random_state = random_state

  # ---- checks -------------------------------------------------------------------------------

  def _check_params(self) -> None:
    """One-line UserInputError naming the bad constructor argument and what is allowed."""
    name = type(self).__name__

    def bad(arg, why):
      raise UserInputError(f"{name}({arg}={getattr(self, arg)!r}): {why}")

    if self.method not in METHODS:
      bad("method", f"choose one of {', '.join(METHODS)}")
    if not (isinstance(self.contamination, (int, float)) and 0 < self.contamination <= 0.5):
      bad("contamination", "must be a number in (0, 0.5]")
    if not (self.eps == "auto" or (isinstance(self.eps, (int, float)) and math.isfinite(self.eps))):
      bad("eps", "must be 'auto' or a finite number (a log-density)")
    if self.normalize not in preprocessing.METHODS:
      bad("normalize", f"choose one of {', '.join(preprocessing.METHODS)}")
    if not (isinstance(self.noise_std, str) and self.noise_std in NOISE_RULES
            or _is_number(self.noise_std) and 0 <= self.noise_std < math.inf):
      bad("noise_std", f"must be {' or '.join(map(repr, NOISE_RULES))} or a finite number >= 0")
    if self.block not in BLOCK_TYPES:
      bad("block", f"choose one of {', '.join(BLOCK_TYPES)}")
    for arg in ("num_blocks", "steps", "batch_size"):
      v = getattr(self, arg)
      if not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0):
        bad(arg, "must be a positive integer")
    try:
      hidden = tuple(self.hidden)
    except TypeError:
      hidden = ()
    if not hidden or not all(isinstance(h, (int, np.integer)) and h > 0 for h in hidden):
      bad("hidden", "must be a non-empty sequence of positive integers, e.g. (128, 128)")
    if self.compute_dtype not in COMPUTE_DTYPES:
      bad("compute_dtype", f"choose one of {', '.join(map(repr, COMPUTE_DTYPES))}")
    if not (isinstance(self.lr, (int, float)) and self.lr > 0):
      bad("lr", "must be a number > 0")
    if not (isinstance(self.warmup_steps, (int, np.integer)) and self.warmup_steps >= 0):
      bad("warmup_steps", "must be an integer >= 0")
    if not (isinstance(self.grad_clip, (int, float)) and self.grad_clip >= 0):
      bad("grad_clip", "must be a number >= 0 (0 disables clipping)")
    if not (isinstance(self.calibration_fraction, (int, float)) and 0 <= self.calibration_fraction < 1):
      bad("calibration_fraction", "must be in [0, 1)")
    if not (isinstance(self.validation_fraction, (int, float)) and 0 <= self.validation_fraction < 1):
      bad("validation_fraction", "must be in [0, 1)")
    if not (isinstance(self.patience, (int, np.integer)) and self.patience >= 0):
      bad("patience", "must be an integer >= 0 (0: no early stopping)")
    if self.patience and not self.validation_fraction:
      bad("patience", "needs held-out rows: set validation_fraction, e.g. 0.1")
    if not (self.random_state is None or isinstance(self.random_state, (int, np.integer))):
      bad("random_state", "must be an int or None")

  def _check_X(self, X, name: str = "X", reset: bool = False) -> np.ndarray:
    """X as float32 [N, D], or a one-line UserInputError (messages follow scikit-learn's wording)."""
    if hasattr(X, "toarray"):
      raise UserInputError(f"{name} is a sparse matrix; a flow needs dense input: pass {name}.toarray()")
    try:
      X = np.asarray(X)
    except Exception as e:  # ragged lists and the like
      raise UserInputError(f"{name} is not an array of numbers ({type(e).__name__}: {e})") from None
    if np.iscomplexobj(X):
      raise UserInputError(f"{name}: Complex data not supported; pass real numbers")
    if X.dtype == object or X.dtype.kind in "USV":
      try:
        X = X.astype(np.float64)
      except (TypeError, ValueError) as e:
        raise NonNumericInputError(f"{name} has non-numeric entries ({e}); convert or drop them") from None
    if X.dtype.kind not in "biuf":
      raise UserInputError(f"{name}: expected numbers, got dtype {X.dtype}")
    if X.ndim != 2:
      hint = ("; Reshape your data: X.reshape(1, -1) for one sample, X.reshape(-1, 1) for one feature"
              if X.ndim == 1 else "")
      raise UserInputError(f"{name}: expected a 2-D array [num_samples, num_features], got shape {X.shape}{hint}")
    if X.shape[0] == 0:
      raise UserInputError(f"{name}: 0 samples (empty array); a detector needs data")
    if X.shape[1] == 0:
      raise UserInputError(f"{name}: 0 feature(s) (shape={X.shape}) while a minimum of 2 is required.")
    X = X.astype(np.float32)
    bad = ~np.isfinite(X)
    if bad.any():
      rows = np.flatnonzero(bad.any(axis=1))
      kinds = "/".join(k for k, m in (("NaN", np.isnan(X)), ("inf", np.isinf(X))) if m.any())
      raise UserInputError(f"{name} contains {int(bad.sum())} {kinds} values in {rows.size} rows "
                           f"(first rows: {rows[:5].tolist()}); impute or drop them")
    if reset:
      self.n_features_in_ = X.shape[1]
    elif X.shape[1] != self.n_features_in_:
      raise UserInputError(f"{name} has {X.shape[1]} features, but {type(self).__name__} is expecting "
                           f"{self.n_features_in_} features as input")
    return X

  # ---- fitting ------------------------------------------------------------------------------

  def config(self) -> ml_collections.ConfigDict:
    """The run config these settings amount to: `config_lib.default_config()` with the
    detector's arguments, i.e. the keys `python -m cnf_jax.main` reads for the same run."""
    c = config_lib.default_config()
    c.seed = 0 if self.random_state is None else int(self.random_state)
    c.methods = self.method
    c.preprocess.normalize = self.normalize
    # 'auto' resolves on the training rows: the value of the last fit, NOISE_SCALE before one.
    c.preprocess.noise_std = float(getattr(self, "noise_std_", NOISE_SCALE) if isinstance(self.noise_std, str)
                                   else self.noise_std)
    c.flow.block, c.flow.num_blocks = self.block, int(self.num_blocks)
    c.flow.hidden = tuple(int(h) for h in self.hidden)
    c.flow.compute_dtype = self.compute_dtype
    c.objective.eps_auto = self.eps == "auto"
    c.objective.eps = 0.0 if self.eps == "auto" else float(self.eps)
    c.objective.eps_holdout = EPS_HOLDOUT
    tc = c.train
    tc.steps, tc.lr, tc.warmup_steps = int(self.steps), float(self.lr), int(self.warmup_steps)
    tc.batch_size = tc.contrastive_batch_size = int(self.batch_size)
    tc.schedule, tc.grad_clip = "cosine", float(self.grad_clip)
    tc.log_every = tc.checkpoint_every = CHUNK_STEPS
    tc.validation_fraction, tc.patience = float(self.validation_fraction), int(self.patience)
    # One device: any batch size works, and a fit is one small program.
    tc.parallel = "single"
    return c

  def _model(self, dim: int) -> Flow:
    flow = self.config().flow
    # A fitted detector scores with the dtype it was fitted with, on any machine.
    flow.compute_dtype = getattr(self, "compute_dtype_", flow.compute_dtype)
    return flow_from_config(flow, dim)

  def _log_prob(self, variables, x: np.ndarray) -> np.ndarray:
    """log p(x) [N] (float64) for x [N, D], in zero-padded chunks of SCORE_CHUNK rows."""
    apply = metrics.jitted_log_prob(self._model(x.shape[1]))
    return metrics.apply_in_chunks(lambda part: apply(variables, part), np.asarray(x, np.float32), SCORE_CHUNK)

  def fit(self, X, y=None, *, contrastive=None):
    """Fits the detector on X [N, D] (inliers, possibly with a few anomalies).

    Args:
      X: training rows [N, D].
      y: ignored (unsupervised; present for scikit-learn pipelines).
      contrastive: contrastive rows [M, D], or None / 'permute' for the
        column-permutation recipe. Method 'flow' does not train on it; with
        validation_fraction > 0 its held-out share is the criterion's reference.
    Returns: self.
    """
    self._check_params()
    X = self._check_X(X, reset=True)
    n, dim = X.shape
    if n < 2:
      raise UserInputError(f"{type(self).__name__} needs at least 2 samples to fit, got {n} sample")
    if dim < 2:
      raise UserInputError(f"{type(self).__name__} needs at least 2 features (coupling flows split the "
                           f"features in two); got n_features = 1 (X has 1 feature(s))")
    seed = int(np.random.randint(2**31 - 1)) if self.random_state is None else int(self.random_state)

    # Calibration split: held out of everything that shapes the score function.
    n_cal = int(self.calibration_fraction * n)
    if self.calibration_fraction > 0 and n_cal == 0:
      raise UserInputError(f"calibration_fraction={self.calibration_fraction} of {n} samples is 0 samples; "
                           "give more samples or set calibration_fraction=0")
    if n - n_cal < 2:
      raise UserInputError(f"only {n - n_cal} samples left to train after holding out {n_cal} for "
                           "calibration; lower calibration_fraction")
    # The training rows keep their order, so with calibration_fraction=0 they are X itself.
    order = plan.split_rng(seed, "calibration").permutation(n)
    x_train_raw, x_cal_raw = X[np.sort(order[n_cal:])], X[order[:n_cal]]

    # Columns constant in the training rows (dead ReLU units of an embedding, a stuck sensor) carry
    # no information and would make the density degenerate: the flow models the others, and new
    # rows are scored on the same columns (constant_columns_ records which were dropped).
    constant = np.flatnonzero(np.ptp(x_train_raw, axis=0) == 0)
    self.constant_columns_ = constant
    self.kept_columns_ = np.setdiff1d(np.arange(dim), constant)
    if self.kept_columns_.size < 2:
      raise UserInputError(f"X: {constant.size} of its {dim} columns are constant in the training rows; "
                           f"the flow needs at least 2 that vary, {self.kept_columns_.size} do")
    x_train_raw = x_train_raw[:, self.kept_columns_]   # x_cal_raw stays whole: decision_function drops them
    dim = self.kept_columns_.size
    stats = preprocessing.fit(x_train_raw, self.normalize)
    x_train = preprocessing.apply(x_train_raw, self.normalize, stats, "X")
    self.noise_std_ = resolve_noise_std(self.noise_std, self.normalize, x_train)
    self.compute_dtype_ = resolve_compute_dtype(self.compute_dtype)

    permute, con = False, None
    # Methods without a contrastive term still need held-out contrastive rows for the
    # selection criterion; their training never reads them.
    if plan.uses_contrastive([self.method]) or self.validation_fraction > 0:
      if contrastive is None or (isinstance(contrastive, str) and contrastive == "permute"):
        permute = True
      elif isinstance(contrastive, str):
        raise UserInputError(f"contrastive={contrastive!r}: pass an array [M, {self.n_features_in_}] or 'permute'")
      else:
        con = preprocessing.apply(self._check_X(contrastive, "contrastive")[:, self.kept_columns_],
                                  self.normalize, stats, "contrastive")

    config = self.config()
    config.seed = seed
    oc = config.objective
    data = plan.with_validation(plan.FitData(x_train, con, permute), seed, config.train.validation_fraction)
    model = self._model(dim)
    trained, history, validation, eps = {}, {}, {}, None
    held = None
    self.noise_selection_ = {}
    if self.noise_std == "auto" and len(data.inliers) >= NOISE_MIN_ROWS:
      # The noise is chosen by likelihood cross-validation: ML flows with each candidate noise
      # on the training rows less a held-out share, compared by that share's log-likelihood.
      # The chosen one is also the eps probe (its held-out rows set eps="auto").
      held, kept = plan.probe_split(data.inliers, seed, NOISE_HOLDOUT)
      data = dataclasses.replace(data, probe_inliers=kept)
      candidates = [float(g * noise_spread(self.normalize, x_train)) for g in NOISE_GRID]
      self.noise_selection_, probes = self._noise_candidates(model, config, data, held, candidates, seed)
      self.noise_std_ = config.preprocess.noise_std = choose_noise(self.noise_selection_)
      trained["eps_probe"], history["eps_probe"] = probes[self.noise_std_]
    elif plan.eps_source(oc.eps_auto, oc.eps_holdout) == "eps_probe":
      held, kept = plan.probe_split(data.inliers, seed, oc.eps_holdout)
      data = dataclasses.replace(data, probe_inliers=kept)
    for name in plan.models_needed([self.method], oc.eps_auto, oc.eps_holdout):
      if name in trained:
        continue   # the chosen noise candidate serves as the eps probe
      if name == "cf":
        eps = (objectives.auto_eps(self._log_prob(trained["eps_probe"], held), oc.eps_quantile, oc.eps_offset)
               if oc.eps_auto else float(oc.eps))
      job = loop.Job(plan.model_inputs(name, data, eps or 0.0), plan.model_seed(seed, name),
                     label=f"{type(self).__name__}: model {name!r}")
      fitted, = loop.fit_models(model, config.train, config.preprocess.noise_std, [job],
                                steps=config.train[plan.MODELS[name].steps_key], name=name, hint=DIVERGED_HINT,
                                progress=False)
      trained[name], history[name] = jax.device_get(fitted.variables), fitted.losses
      if fitted.validation is not None:
        validation[name] = {k: v for k, v in fitted.validation.items()}
    scored = plan.METHODS[self.method].models
    self.variables_ = {m: trained[m] for m in scored}
    self.loss_history_ = {m: history[m] for m in scored}
    # Per model with validation_fraction > 0: best_step, best_val_loss, stopped_at, val_loss {step: value}.
    self.validation_ = {m: validation[m] for m in scored if m in validation}
    self.eps_ = eps
    self.preprocessing_ = (self.normalize, stats)
    # The label-free selection criterion (evaluation/selection.py) on the held-out rows, as in
    # a CLI run: held-out contrastive rows (permuted held-out rows for 'permute') against
    # held-out inliers, by this method's score.
    self.selection_criterion_ = None
    if data.val_inliers is not None and data.val_contrastive is not None:
      val = [plan.anomaly_scores(self.method, {m: self._log_prob(trained[m], x) for m in scored})
             for x in (data.val_inliers, data.val_contrastive)]
      self.selection_criterion_ = selection.heldout_auroc(*val)
    self.calibration_scores_ = np.sort(self.decision_function(x_cal_raw)) if n_cal else np.zeros(0)
    scores = self.decision_function(X)
    # PyOD: threshold at the (1 - contamination) quantile of the training scores.
    self._set_training_scores(scores, float(np.percentile(scores, 100 * (1 - self.contamination))))
    return self

  def _noise_candidates(self, model: Flow, config, data, held: np.ndarray, candidates, seed: int
                        ) -> Tuple[Dict[float, float], Dict[float, tuple]]:
    """({noise: mean log p of the held-out rows held [H, D]}, {noise: (variables, losses)}) of
    maximum-likelihood flows trained on data.probe_inliers with each candidate noise.

    One vmapped program with the eps probe's seed for every candidate: the same
    initialisation and batches, only the noise differs. A candidate whose loss diverges
    (too little noise on integer-coded columns, say) scores -inf instead of failing the fit.
    """
    inputs = plan.model_inputs("eps_probe", data)
    jobs = [loop.Job(inputs, plan.model_seed(seed, "eps_probe"), noise_std=noise,
                     label=f"{type(self).__name__}: noise candidate {noise:.3g}") for noise in candidates]

    def fit(some):
      return loop.fit_models(model, config.train, candidates[0], some, steps=config.train.steps, name="noise",
                             hint=DIVERGED_HINT, progress=False)

    try:
      fitted = fit(jobs)
    except NonFiniteLossError:   # one diverged: the others one by one
      fitted = []
      for job in jobs:
        try:
          fitted += fit([job])
        except NonFiniteLossError:
          fitted.append(None)
    log_lik, probes = {}, {}
    for noise, f in zip(candidates, fitted):
      log_lik[noise] = -math.inf
      if f is None:
        continue
      variables = jax.device_get(f.variables)
      log_p = self._log_prob(variables, held)
      if np.all(np.isfinite(log_p)):
        log_lik[noise] = float(np.mean(log_p))
      probes[noise] = (variables, f.losses)
    return log_lik, probes

  def _set_training_scores(self, scores: np.ndarray, threshold: float) -> None:
    """decision_scores_ [N], threshold_, labels_ [N] and, as PyOD keeps them for predict_proba's
    'unify', the scores' mean _mu and standard deviation _sigma."""
    self.decision_scores_, self.threshold_ = scores, threshold
    self.labels_ = (scores > threshold).astype(int)
    self._mu, self._sigma = np.mean(scores), np.std(scores)

  def calibrate(self, X_inliers):
    """Replaces the calibration scores by those of new inliers X_inliers [n, D]; returns self.

    Use data the detector was not trained on, exchangeable with the inliers to be tested.
    """
    check_is_fitted(self)
    self.calibration_scores_ = np.sort(self.decision_function(self._check_X(X_inliers, "X_inliers")))
    return self

  # ---- scoring ------------------------------------------------------------------------------

  def decision_function(self, X) -> np.ndarray:
    """Anomaly scores [N] (float64) of X [N, D]; higher = more anomalous.

    cf / flow: -log p(x) of the normalised x; flow_ratio: log p_contrastive(x) - log p_flow(x).
    """
    check_is_fitted(self)
    X = self._check_X(X)[:, self.kept_columns_]
    method, stats = self.preprocessing_
    x = preprocessing.apply(X, method, stats, "X")
    return plan.anomaly_scores(self.method, {m: self._log_prob(v, x) for m, v in self.variables_.items()})

  def score_samples(self, X) -> np.ndarray:
    """-decision_function(X) [N]: scikit-learn's convention, lower = more abnormal (log p(x) for cf/flow)."""
    return -self.decision_function(X)

  def pvalues(self, X) -> np.ndarray:
    """Conformal p-values [N] of X [N, D] against the calibration inliers (small = anomalous)."""
    check_is_fitted(self)
    if self.calibration_scores_.size == 0:
      raise UserInputError("no calibration scores: fit with calibration_fraction > 0 or call "
                           "calibrate(X_inliers) first")
    return conformal_pvalues(self.calibration_scores_, self.decision_function(X))

  def predict(self, X, return_confidence=False, *, alpha: Optional[float] = None, fdr: Optional[float] = None):
    """0/1 labels [N] of X [N, D] (1 = anomaly, PyOD's convention); with return_confidence=True,
    (labels [N], predict_confidence(X) [N]) as PyOD returns them.

    One rule flags:
      default   score > threshold_ (the (1 - contamination) quantile of the training scores);
      alpha=a   conformal p-value <= a: flags at most a fraction a of exchangeable inliers;
      fdr=q     Benjamini-Hochberg at level q on the conformal p-values of X: on average at
                most a fraction q of the flagged rows are inliers (the false discovery rate).
    The confidence is about the threshold_ labels, so it goes with the default rule only.
    """
    # predict(X, 0.01) meant alpha before return_confidence took the second place: refuse it.
    if not isinstance(return_confidence, (bool, np.bool_)):
      raise UserInputError(f"predict(return_confidence={return_confidence!r}): must be True or False; "
                           "pass alpha= and fdr= by keyword")
    if alpha is not None and fdr is not None:
      raise UserInputError(f"predict(alpha={alpha!r}, fdr={fdr!r}): give alpha (false-alarm rate) or fdr "
                           "(false discovery rate), not both")
    if return_confidence and (alpha is not None or fdr is not None):
      raise UserInputError("predict(return_confidence=True) is PyOD's confidence in the threshold_ labels: "
                           "drop alpha=/fdr=, or call predict_confidence(X) on its own")
    if alpha is not None:
      if not (_is_number(alpha) and 0 < alpha < 1):
        raise UserInputError(f"predict(alpha={alpha!r}): alpha must be a number in (0, 1)")
      return (self.pvalues(X) <= alpha).astype(int)
    if fdr is not None:
      if not (_is_number(fdr) and 0 < fdr < 1):
        raise UserInputError(f"predict(fdr={fdr!r}): fdr must be a number in (0, 1), e.g. 0.1")
      return benjamini_hochberg(self.pvalues(X), float(fdr)).astype(int)
    scores = self.decision_function(X)
    labels = (scores > self.threshold_).astype(int)
    return (labels, self._confidence(scores)) if return_confidence else labels

  # ---- PyOD's BaseDetector API (pyod 3.6.7 semantics, implemented here: no pyod at run time) --

  def predict_proba(self, X, method: str = "linear", return_confidence: bool = False):
    """PyOD's score-to-probability conversions: [N, 2] columns [1 - p, p] for X [N, D]; with
    return_confidence=True, (that, predict_confidence(X) [N]).

      linear  p = min-max scaling of the score by the training scores' min and max, clipped to [0, 1];
      unify   p = erf((score - mean) / (std sqrt 2)) with the training scores' mean and std,
              clipped to [0, 1] (Kriegel et al. 2011, "Interpreting and unifying outlier scores").
    Both rescale the score; they are not calibrated probabilities (pvalues(X) are calibrated).
    """
    if not (isinstance(method, str) and method in PROBA_METHODS):
      raise UserInputError(f"predict_proba(method={method!r}): not a probability conversion method; "
                           f"choose one of {', '.join(PROBA_METHODS)}")
    check_is_fitted(self)
    scores, train = self.decision_function(X), self.decision_scores_
    if method == "linear":
      # MinMaxScaler's arithmetic (x * scale + offset; a range under 10 eps counts as 1), so the
      # values are PyOD's to the last bit.
      span = train.max() - train.min()
      scale = 1.0 / (1.0 if span < 10 * np.finfo(np.float64).eps else span)
      p = scores * scale + (0.0 - train.min() * scale)
    else:
      p = erf((scores - self._mu) / (self._sigma * np.sqrt(2)))
    p = p.clip(0, 1)
    probs = np.stack([1 - p, p], axis=1)
    return (probs, self._confidence(scores)) if return_confidence else probs

  def predict_confidence(self, X) -> np.ndarray:
    """PyOD's confidence [N] in [0, 1] that the threshold_ label of each row of X [N, D] would stay
    the same under a slightly different training set (Perini et al. 2020, ExCeeD)."""
    check_is_fitted(self)
    return self._confidence(self.decision_function(X))

  def _confidence(self, scores: np.ndarray) -> np.ndarray:
    """predict_confidence from the scores [N] of the rows.

    With n training scores of which k are <= s, p = (1 + k) / (2 + n) is the posterior chance
    (uniform prior) that a fresh training score falls below s; the confidence that s is an
    outlier is the chance that s would rank among the top floor(n contamination) of a new
    training set, i.e. that more than n - floor(n contamination) of n such draws fall below
    it: 1 - BinomCDF(n - floor(n contamination); n, p). Rows labelled 0 get 1 minus that.
    """
    train = self.decision_scores_
    n = train.size
    below = np.searchsorted(np.sort(train), scores, side="right")
    posterior = (1 + below) / (2 + n)
    outlier = 1 - binom.cdf(n - int(n * self.contamination), n, posterior)
    return np.where(scores > self.threshold_, outlier, 1 - outlier)

  def predict_with_rejection(self, X, T=32, return_stats=False, delta=0.1, c_fp=1, c_fn=1, c_r=-1):
    """PyOD's labels with a reject option: [N] of 0, 1 or -2 (rejected: the threshold_ label is not
    confident enough, 2 |confidence - 1/2| <= 1 - 2 exp(-T)); with return_stats=True,
    (labels, [expected rejection rate, upper bound of the rejection rate (holds with probability
    1 - delta), upper bound of the cost]) from compute_rejection_stats (Perini et al. 2023).

    c_fp, c_fn, c_r: costs of a false positive, a false negative and a rejection; c_r < 0 (the
    default) means the contamination, as in PyOD. Sets rejection_threshold_ = 1 - 2 exp(-T), as PyOD.
    """
    self._check_rejection_args(T, delta, c_fp, c_fn, c_r)
    check_is_fitted(self)
    scores = self.decision_function(X)
    labels = (scores > self.threshold_).astype(int)
    self.rejection_threshold_ = 1 - 2 * np.exp(-T)
    labels[2 * np.abs(self._confidence(scores) - 0.5) <= self.rejection_threshold_] = -2
    if return_stats:
      return labels, list(self.compute_rejection_stats(T=T, delta=delta, c_fp=c_fp, c_fn=c_fn, c_r=c_r))
    return labels

  def _check_rejection_args(self, T, delta, c_fp, c_fn, c_r) -> None:
    # PyOD warns and substitutes 0.1 for a delta outside (0, 1); a wrong argument is an error here.
    if not (_is_number(T) and T > 0):
      raise UserInputError(f"T={T!r}: must be a number > 0 (rejection threshold 1 - 2 exp(-T); PyOD's default 32)")
    if not (_is_number(delta) and 0 < delta < 1):
      raise UserInputError(f"delta={delta!r}: must be in (0, 1) (the bound holds with probability 1 - delta)")
    for name, cost in (("c_fp", c_fp), ("c_fn", c_fn), ("c_r", c_r)):
      if not _is_number(cost):
        raise UserInputError(f"{name}={cost!r}: must be a number (a cost)")

  def compute_rejection_stats(self, T=32, delta=0.1, c_fp=1, c_fn=1, c_r=-1, verbose=False):
    """PyOD's guarantees for predict_with_rejection, from the n training scores and the
    contamination g alone: (expected rejection rate, upper bound of the rejection rate that holds
    with probability 1 - delta, upper bound of the cost) as floats. c_r < 0 means g."""
    self._check_rejection_args(T, delta, c_fp, c_fn, c_r)
    check_is_fitted(self)
    g = self.contamination
    c_r = g if c_r < 0 else c_r
    n = int(self.decision_scores_.size)
    k = int(n * g) - 1
    if k < 0:
      raise UserInputError(f"rejection stats need n * contamination >= 1 (n = {n} training rows, "
                           f"contamination = {g}): fit on more rows or raise contamination")

    def quantile(level):   # the p with BinomCDF(k; n, p) = level (decreasing in p, so one root in [0, 1])
      return brentq(lambda p: binom.cdf(k, n, p) - level, 0, 1)

    q_low, q_high = quantile(1 - np.exp(-T)), quantile(np.exp(-T))
    expected_rate = q_high - q_low
    # PyOD's closed-form margins, in its order of operations; a negative radicand (small T) gives
    # NaN and max(0, NaN) is 0, as there.
    right = min(1, (-g * (n + 2) + n + 1) / n + (T * (n + 2)) / np.sqrt(2 * n ** 3 * T))
    with np.errstate(invalid="ignore"):
      left = max(0, (2 + n * (1 - g) * (n + 1)) / n ** 2 - np.sqrt(
          0.5 * n ** 5 * (2 * n * (-3 * g ** 2 - 2 * n * (1 - g) ** 2 + 4 * g - 3) + T * (n + 2) ** 2 - 8)) / n ** 4)
    upper_rate = right - left + 2 * np.sqrt(np.log(2 / delta) / (2 * n))
    upper_cost = min(g, q_low) * c_fp + min(1 - q_high, g) * c_fn + (q_high - q_low) * c_r
    if verbose:
      print(f"Expected rejection rate: {expected_rate:.4f}, upper bound rejection rate: {upper_rate:.4f}, "
            f"upper bound cost: {upper_cost:.4f}")
    return float(expected_rate), float(upper_rate), float(upper_cost)

  def _predict_rank(self, X, normalized: bool = False) -> np.ndarray:
    """PyOD's outlyingness rank [N] of X [N, D]: how many training scores are below each score
    (normalized: divided by the largest rank), for score combination."""
    check_is_fitted(self)
    ranks = np.searchsorted(np.sort(self.decision_scores_), self.decision_function(X))
    return ranks / ranks.max() if normalized else ranks

  def fit_predict(self, X, y=None, **fit_params) -> np.ndarray:
    """fit(X, y, **fit_params) then labels_ [N] (PyOD and scikit-learn's OutlierMixin agree)."""
    return self.fit(X, y, **fit_params).labels_

  def fit_predict_score(self, X, y, scoring: str = "roc_auc_score") -> float:
    """Deprecated in PyOD (a FutureWarning, kept as there): fits on X [N, D] and scores the training
    scores against the 0/1 labels y [N] by 'roc_auc_score' or 'prc_n_score' (precision at rank
    n = #anomalies in y)."""
    warnings.warn("Function fit_predict_score is deprecated (as in PyOD): fit, then score "
                  "decision_scores_ with sklearn.metrics", FutureWarning, stacklevel=2)
    if not (isinstance(scoring, str) and scoring in SCORINGS):
      raise UnsupportedScoringError(f"fit_predict_score(scoring={scoring!r}): choose one of {', '.join(SCORINGS)}")
    y = np.asarray(y).ravel()
    self.fit(X)
    if y.shape != self.decision_scores_.shape:
      raise UserInputError(f"y has {y.size} labels for {self.decision_scores_.size} rows of X: give one 0/1 label a row")
    if scoring == "roc_auc_score":
      return float(roc_auc_score(y, self.decision_scores_))
    # PyOD's precision @ rank n: flag the scores above the (1 - fraction of anomalies in y) percentile.
    cut = np.percentile(self.decision_scores_, 100 * (1 - np.count_nonzero(y) / y.size))
    return float(precision_score(y, (self.decision_scores_ > cut).astype(int)))

  def __sklearn_tags__(self):
    tags = super().__sklearn_tags__()
    tags.input_tags.allow_nan = False
    tags.non_deterministic = False
    return tags

  # ---- persistence --------------------------------------------------------------------------

  def save(self, path: str) -> None:
    """Writes the fitted detector to one .npz file (weights, preprocessing, calibration), atomically."""
    check_is_fitted(self)
    check_writable_path(path, "detector")
    method, stats = self.preprocessing_
    meta = {
        "format": FORMAT,
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()},
        "n_features_in": int(self.n_features_in_),
        "constant_columns": self.constant_columns_.tolist(),
        "eps": self.eps_,
        "noise_std": self.noise_std_,
        "compute_dtype": self.compute_dtype_,
        # [[noise, mean held-out log-likelihood or None for -inf], ...] of noise_std='auto'
        "noise_selection": [[k, v if math.isfinite(v) else None] for k, v in self.noise_selection_.items()],
        "selection_criterion": getattr(self, "selection_criterion_", None),
        "threshold": self.threshold_,
        "preprocessing": preprocessing.to_json_dict(method, stats),
        "models": sorted(self.variables_),
    }
    arrays = {"meta": np.array(json.dumps(meta)), "calibration_scores": self.calibration_scores_,
              "decision_scores": self.decision_scores_}
    for model, variables in self.variables_.items():
      for key, value in flax.traverse_util.flatten_dict(variables, sep="/").items():
        arrays[f"variables/{model}/{key}"] = np.asarray(value)
    for model, losses in self.loss_history_.items():
      arrays[f"loss_history/{model}"] = losses
    with atomic_write(path, "wb") as f:  # a reader sees the old file or the complete new one, never half.
      np.savez(f, **arrays)

  def export(self, path: str, platforms=exported.PLATFORMS) -> None:
    """Writes the fitted scorer to the .npz `path` as one serialised jax.export program that
    needs only numpy and jax to run (no cnf_jax, flax or sklearn), atomically:

      f = np.load(path)
      program = jax.export.deserialize(bytearray(f["program"].tobytes()))
      scores = np.asarray(program.call(X.astype(np.float32)))   # [N] float32 = decision_function(X)
      cal = np.sort(f["calibration_scores"])                    # p = (1 + #{cal >= s}) / (n_cal + 1)
      p = (1 + cal.size - np.searchsorted(cal, scores, side="left")) / (cal.size + 1)

    The program takes raw rows X [N, n_features_in_] float32 for any N and does what
    decision_function does (drops constant_columns_, normalises, log p of each model, the
    method's score), in float32 with full-float32 matmuls: its scores equal
    decision_function's within float32 rounding. It checks nothing (NaN rows give NaN);
    `cnf_jax.exported.load(path)` and `python -m cnf_jax.score --detector=path` check the
    input. platforms: where it may run, any of 'cpu', 'cuda', 'rocm', 'tpu' (one program
    lowered for each; default cpu, cuda and tpu). jax's deserialiser imports the flatbuffers
    package. The file also holds `meta` (JSON), `calibration_scores` and `decision_scores`
    (see cnf_jax/exported.py).
    """
    check_is_fitted(self)
    check_writable_path(path, "exported scorer")
    method, stats = self.preprocessing_
    kept, model = self.kept_columns_, self._model(self.kept_columns_.size)

    def scores(x):   # x [N, n_features_in_] float32 -> [N] float32, traced once with the weights as constants
      x = preprocessing.transform(x[:, kept], method, stats, jnp)
      return plan.anomaly_scores(self.method, {m: model.apply(v, x, method=Flow.log_prob)
                                               for m, v in self.variables_.items()})

    info = {"method": self.method, "n_features_in": int(self.n_features_in_), "kept_columns": kept.tolist(),
            "constant_columns": self.constant_columns_.tolist(), "normalize": method,
            "threshold": float(self.threshold_), "contamination": float(self.contamination),
            "eps": None if self.eps_ is None else float(self.eps_)}
    exported.write(path, scores, info, {"calibration_scores": self.calibration_scores_,
                                        "decision_scores": self.decision_scores_}, platforms)

  @classmethod
  def load(cls, path: str) -> "ContrastiveFlowDetector":
    """Reads a detector written by `save`; checks the weights fit the recorded architecture."""
    try:
      with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
      raise UserInputError(f"detector file not found: {path}") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
      raise UserInputError(f"{path} is not a readable detector file ({type(e).__name__}: {e})") from None
    try:
      meta = json.loads(str(arrays["meta"]))
    except (KeyError, json.JSONDecodeError):
      raise UserInputError(f"{path} is not a ContrastiveFlowDetector file (no readable 'meta' entry)") from None
    if meta.get("format") != FORMAT:
      raise UserInputError(f"{path} has format {meta.get('format')!r}; this version reads {FORMAT!r}")
    params = meta["params"]
    params["hidden"] = tuple(params["hidden"])
    det = cls(**params)
    det.n_features_in_ = meta["n_features_in"]
    det.constant_columns_ = np.asarray(meta.get("constant_columns", []), np.int64)   # older files: none
    det.kept_columns_ = np.setdiff1d(np.arange(det.n_features_in_), det.constant_columns_)
    det.eps_ = meta["eps"]
    det.noise_std_ = meta.get("noise_std", params["noise_std"])   # older files: a number in params
    if "compute_dtype" in meta:   # older files: what 'auto' gives on this machine
      det.compute_dtype_ = meta["compute_dtype"]
    det.noise_selection_ = {k: -math.inf if v is None else v for k, v in meta.get("noise_selection", [])}
    det.selection_criterion_ = meta.get("selection_criterion")
    det.preprocessing_ = preprocessing.from_json_dict(meta["preprocessing"], path)
    det.calibration_scores_ = arrays["calibration_scores"]
    det._set_training_scores(arrays["decision_scores"], meta["threshold"])
    det.validation_ = {}
    det.loss_history_ = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("loss_history/")}
    like = init_flow(det._model(det.kept_columns_.size), jax.random.key(0))
    expected = {k: v.shape for k, v in flax.traverse_util.flatten_dict(like, sep="/").items()}
    det.variables_ = {}
    for model in meta["models"]:
      prefix = f"variables/{model}/"
      got = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
      if {k: v.shape for k, v in got.items()} != expected:
        raise UserInputError(f"{path}: the weights of model {model!r} do not fit the recorded architecture "
                             f"(block={det.block}, num_blocks={det.num_blocks}, hidden={det.hidden}, "
                             f"{det.kept_columns_.size} features); the file is corrupt or was edited")
      det.variables_[model] = flax.traverse_util.unflatten_dict(got, sep="/")
    return det
