"""The arrays one experiment works on, their validation, and deterministic batching."""
import dataclasses
from typing import Optional, Sequence

import numpy as np

from cnf_jax.errors import UserInputError


@dataclasses.dataclass
class TaskData:
  """Everything a run trains and evaluates on, as feature vectors.

  Attributes:
    inliers: in-distribution training data [N, D].
    contrastive: auxiliary ("contrastive") training data [M, D], or None.
    test: evaluation data [T, D].
    test_is_anomaly: [T] bool, True for anomalies (the positive class of AUROC).
    test_group: optional [T] int group id per test sample (e.g. CIFAR class),
      used for per-group AUROCs; names in `group_names`.
    extra_test_sets: optional named extra evaluation sets {name: (x [T', D], is_anomaly [T'])}.
    test_index: optional [T] position of each test row in its image source, and
      test_source_id [T] which of `test_sources` (source descriptions, e.g.
      'zip:/data/cifar10-jpeg.zip:test') it came from; lets reports show the images.
    contrastive_mixture: optional `mixture.Mixture`: `contrastive` is the concatenation of
      its sources, and contrastive batches are drawn with its weights (MixtureSampler).
    contrastive_permute: True: no contrastive array; the contrastive batch is the
      inlier batch with every column permuted, made in the train step (paper 5.4).
  """
  inliers: np.ndarray
  contrastive: Optional[np.ndarray]
  test: np.ndarray
  test_is_anomaly: np.ndarray
  test_group: Optional[np.ndarray] = None
  group_names: Sequence[str] = ()
  extra_test_sets: dict = dataclasses.field(default_factory=dict)
  test_index: Optional[np.ndarray] = None
  test_source_id: Optional[np.ndarray] = None
  test_sources: Sequence[str] = ()
  contrastive_mixture: Optional[object] = None
  contrastive_permute: bool = False

  @property
  def dim(self) -> int:
    return self.inliers.shape[1]


def check_features(name: str, x: np.ndarray, dim: Optional[int] = None) -> np.ndarray:
  """Returns x as float32 [N, D] or raises a UserInputError that says what is wrong."""
  x = np.asarray(x)
  if x.ndim != 2:
    raise UserInputError(f"{name}: expected a 2-D array [num_samples, num_features], got shape {x.shape}")
  if x.shape[0] == 0:
    raise UserInputError(f"{name}: the set is empty (0 samples); check the data source and class filter")
  if not np.issubdtype(x.dtype, np.number):
    raise UserInputError(f"{name}: expected numbers, got dtype {x.dtype}")
  if np.iscomplexobj(x):   # a cast to float32 would silently drop the imaginary parts
    raise UserInputError(f"{name}: expected real numbers, got complex dtype {x.dtype}; pass the real "
                         "features (e.g. np.real, np.abs, or real and imaginary parts as separate columns)")
  x = x.astype(np.float32)
  bad = ~np.isfinite(x)
  if bad.any():
    rows = np.flatnonzero(bad.any(axis=1))
    raise UserInputError(
        f"{name}: {int(bad.sum())} non-finite values (NaN/Inf) in {rows.size} rows "
        f"(first rows: {rows[:5].tolist()}); clean or drop those rows")
  if dim is not None and x.shape[1] != dim:
    raise UserInputError(f"{name}: has {x.shape[1]} features but the inliers have {dim}; "
                         "all sets must come from the same feature extractor")
  return x


def check_labels(name: str, y: np.ndarray) -> np.ndarray:
  """Anomaly labels as a bool vector [T]: bool, or numbers that are all 0 or 1; anything
  else (NaN, 0.5, strings such as "yes"/"no") is a UserInputError, never a silent cast."""
  y = np.asarray(y)
  if y.dtype == bool:
    return y.reshape(-1)
  if not np.issubdtype(y.dtype, np.number) or np.iscomplexobj(y):
    raise UserInputError(f"{name}: expected bool or 0/1 labels (1 = anomaly), got dtype {y.dtype}"
                         + (f" (e.g. {y.reshape(-1)[0]!r})" if y.size else ""))
  flat = y.reshape(-1)
  bad = np.flatnonzero(~np.isin(flat, (0, 1)))
  if bad.size:
    raise UserInputError(f"{name}: {bad.size} labels are not 0 or 1 (first: {flat[bad[0]].item()!r} at index "
                         f"{int(bad[0])}); use 1 for anomalies and 0 for inliers")
  return flat.astype(bool)


def validate(data: TaskData, needs_contrastive: bool) -> TaskData:
  """Checks shapes, finiteness and labels of every array; returns a float32 copy."""
  inliers = check_features("inlier training features", data.inliers)
  dim = inliers.shape[1]
  contrastive = None
  if data.contrastive is not None:
    contrastive = check_features("contrastive features", data.contrastive, dim)
    if data.contrastive_mixture is not None and data.contrastive_mixture.total != len(contrastive):
      raise ValueError(f"the contrastive mixture covers {data.contrastive_mixture.total} rows, "
                       f"the contrastive set has {len(contrastive)}")
  elif needs_contrastive and not data.contrastive_permute:
    raise UserInputError("the chosen methods need contrastive data but the task provides none; "
                         "set config.methods to 'flow' or provide a contrastive set")
  test = check_features("test features", data.test, dim)
  labels = check_labels("test labels (test_is_anomaly)", data.test_is_anomaly)
  if labels.shape[0] != test.shape[0]:
    raise UserInputError(f"test labels: {labels.shape[0]} labels for {test.shape[0]} test samples")
  if labels.all() or not labels.any():
    raise UserInputError("test set: AUROC needs both inliers and anomalies, "
                         f"got {int(labels.sum())} anomalies out of {labels.size}")
  extra = {}
  for name, (x, y) in data.extra_test_sets.items():
    extra[name] = (check_features(f"test set {name!r}", x, dim), check_labels(f"labels of test set {name!r}", y))
  return dataclasses.replace(data, inliers=inliers, contrastive=contrastive, test=test,
                             test_is_anomaly=labels, extra_test_sets=extra)


class EpochSampler:
  """Deterministic shuffled minibatches: batch(step) depends only on (seed, step).

  Each epoch is a fresh permutation drawn from numpy's Generator seeded with
  (seed, epoch); batches run across epoch boundaries. A resumed run therefore
  sees exactly the batches the uninterrupted run would have.
  """

  def __init__(self, num_examples: int, batch_size: int, seed: int):
    if num_examples <= 0:
      raise UserInputError("cannot draw batches from an empty set")
    self.num_examples = num_examples
    self.batch_size = batch_size
    self.seed = seed
    self._epoch = -1
    self._perm = None

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch != self._epoch:
      self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
      self._epoch = epoch
    return self._perm

  def indices(self, step: int) -> np.ndarray:
    """Indices [batch_size] of the batch at `step`."""
    start = step * self.batch_size
    out = np.empty(self.batch_size, dtype=np.int64)
    filled = 0
    while filled < self.batch_size:
      epoch, offset = divmod(start + filled, self.num_examples)
      take = min(self.batch_size - filled, self.num_examples - offset)
      out[filled:filled + take] = self._permutation(epoch)[offset:offset + take]
      filled += take
    return out
