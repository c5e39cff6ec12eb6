"""Contrastive data as a weighted mixture of sources, drawn per batch (paper 5.3).

Syntax of `data.contrastive_mixture` (tasks that support it, e.g. oneclass):

  "<source>:<weight>,<source>:<weight>,..."    e.g. "tiny_imagenet:0.9,cifar10/horse:0.1"

Weights are numbers >= 0 that sum to 1 (within 1e-6); a source of weight 0 is
loaded but never drawn (so a sweep over weights keeps the same sources). What a
source name means is up to the task (oneclass: `<dataset>` = all its training
features, `<dataset>/<class>` = one class's training features).

The rows of all sources are concatenated in the order given ([M, D], source j
occupying rows offsets[j] : offsets[j] + sizes[j]); `MixtureSampler` returns
indices into that concatenation, so the jitted train step sees an ordinary
contrastive batch [B, D]. Each step's batch takes its per-source counts from a
multinomial(B, weights) draw seeded by (seed, step), and the rows of source j
from source j's own epoch stream (a fresh permutation per epoch, as
`EpochSampler`), continuing where the previous steps stopped. Every batch thus
depends only on (seed, step): a resumed run, or one model of a vmapped sweep,
sees exactly the batches of the uninterrupted separate run.
"""
import dataclasses
import math
from typing import Dict, List, Sequence, Tuple

import numpy as np

from cnf_jax.errors import UserInputError

SUM_TOLERANCE = 1e-6


def parse(text: str, key: str = "data.contrastive_mixture") -> List[Tuple[str, float]]:
  """'a:0.9,b/c:0.1' -> [('a', 0.9), ('b/c', 0.1)]; UserInputError saying what is wrong otherwise."""
  example = "e.g. 'tiny_imagenet:0.9,cifar10/horse:0.1'"
  entries = [e.strip() for e in (text or "").split(",") if e.strip()]
  if not entries:
    raise UserInputError(f"config {key} is empty; give sources with weights, {example}")
  out = []
  for entry in entries:
    name, sep, weight_text = entry.rpartition(":")
    name = name.strip()
    if not sep or not name:
      raise UserInputError(f"config {key}: entry {entry!r} is not <source>:<weight>; {example}")
    try:
      weight = float(weight_text)
    except ValueError:
      raise UserInputError(f"config {key}: weight {weight_text.strip()!r} of source {name!r} is not a number; "
                           f"{example}") from None
    if not math.isfinite(weight) or weight < 0:
      raise UserInputError(f"config {key}: weight {weight_text.strip()} of source {name!r} must be a finite number >= 0")
    out.append((name, weight))
  names = [n for n, _ in out]
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise UserInputError(f"config {key}: source(s) {', '.join(duplicates)} given twice; merge their weights")
  total = sum(w for _, w in out)
  if abs(total - 1.0) > SUM_TOLERANCE:
    raise UserInputError(f"config {key}: weights sum to {total:.6g}, not 1; {example}")
  return out


@dataclasses.dataclass(frozen=True)
class Mixture:
  """Sources of a contrastive set concatenated in this order: names, weights (sum 1), row counts."""
  names: Tuple[str, ...]
  weights: Tuple[float, ...]
  sizes: Tuple[int, ...]

  def __post_init__(self):
    for name, weight, size in zip(self.names, self.weights, self.sizes):
      if weight > 0 and size == 0:
        raise UserInputError(f"contrastive mixture source {name!r} has weight {weight} but no rows")

  @property
  def offsets(self) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)

  @property
  def total(self) -> int:
    return int(sum(self.sizes))


class MixtureSampler:
  """Contrastive batches from a Mixture: indices(step) [B] into the concatenated sources.

  Same interface as `task_data.EpochSampler`. counts(step) is
  multinomial(B, weights) from numpy's Generator seeded with (seed, step, 1);
  source j's rows come from the permutations default_rng((seed, 2, j, epoch)).
  The position of step s in source j's stream is the sum of its counts before s,
  computed once and cached (cumulative counts), so any step can be asked first.
  """

  def __init__(self, mixture: Mixture, batch_size: int, seed: int):
    self.mixture = mixture
    self.batch_size = batch_size
    self.seed = seed
    self._weights = np.asarray(mixture.weights, np.float64) / np.sum(mixture.weights)
    self._cumulative = np.zeros((1, len(mixture.sizes)), np.int64)  # row s: counts drawn before step s
    self._perms: Dict[Tuple[int, int], np.ndarray] = {}

  def counts(self, step: int) -> np.ndarray:
    """Rows per source [S] of the batch at `step` (sums to batch_size)."""
    return np.random.default_rng([self.seed, step, 1]).multinomial(self.batch_size, self._weights)

  def _position(self, step: int) -> np.ndarray:
    if step >= len(self._cumulative):
      rows = [self._cumulative[-1]]
      for s in range(len(self._cumulative) - 1, step):
        rows.append(rows[-1] + self.counts(s))
      self._cumulative = np.concatenate([self._cumulative, np.stack(rows[1:])])
    return self._cumulative[step]

  def _permutation(self, source: int, epoch: int) -> np.ndarray:
    key = (source, epoch)
    if key not in self._perms:
      if len(self._perms) > 4 * len(self.mixture.sizes):  # keep only recent epochs
        self._perms.clear()
      self._perms[key] = np.random.default_rng([self.seed, 2, source, epoch]).permutation(self.mixture.sizes[source])
    return self._perms[key]

  def indices(self, step: int) -> np.ndarray:
    """Indices [batch_size] into the concatenated sources, grouped by source."""
    out = []
    for j, (start, count, offset) in enumerate(zip(self._position(step), self.counts(step), self.mixture.offsets)):
      n = self.mixture.sizes[j]
      filled = 0
      while filled < count:
        epoch, pos = divmod(int(start) + filled, n)
        take = min(count - filled, n - pos)
        out.append(offset + self._permutation(j, epoch)[pos:pos + take])
        filled += take
    return np.concatenate(out).astype(np.int64)

  def realised_fractions(self, steps: int) -> List[float]:
    """Fraction of the rows of steps [0, steps) drawn from each source."""
    drawn = self._position(steps)
    return (drawn / max(1, drawn.sum())).tolist()


def make_sampler(num_examples: int, batch_size: int, seed: int, mixture: "Mixture | None" = None):
  """EpochSampler over num_examples rows, or a MixtureSampler when a mixture is given."""
  from cnf_jax.data.task_data import EpochSampler
  if mixture is None:
    return EpochSampler(num_examples, batch_size, seed)
  if mixture.total != num_examples:
    raise ValueError(f"mixture covers {mixture.total} rows but the array has {num_examples}")
  return MixtureSampler(mixture, batch_size, seed)


def concatenate(named_rows: Sequence[Tuple[str, float, np.ndarray]]) -> Tuple[np.ndarray, Mixture]:
  """[(name, weight, rows [n_j, D])] -> (concatenated rows [M, D], Mixture)."""
  rows = np.concatenate([r for _, _, r in named_rows])
  return rows, Mixture(tuple(n for n, _, _ in named_rows), tuple(float(w) for _, w, _ in named_rows),
                       tuple(len(r) for _, _, r in named_rows))
