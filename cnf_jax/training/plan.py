"""The model plan: which flows a run trains for its methods, and how each method is scored.

Two tables are the single source of truth for every caller (the CLI run, the vmapped
sweep, `ContrastiveFlowDetector` and the score CLI):

  MODELS   every flow a run can train: its objective, the data it fits, the model it
           starts from (fine-tuning), its seed stream and its step budget;
  METHODS  every flow-based method: the models it needs, whether it reads the
           contrastive data, and how it turns their log-densities into an anomaly score.

Adding a flow method is one METHODS entry (plus a MODELS entry if it trains a new kind
of model); `models_needed`, `model_inputs` and `anomaly_scores` then serve it everywhere.

Seeds: model `name` of a run with seed s uses the seed `model_seed(s, name)` for its
initialisation, training noise and batch order (`batch_seed`); host-side splits of a
run (the eps probe's held-out inliers, the detector's calibration rows, the sample of
contrastive rows scored for histograms) come from `split_rng(s, stream)`. A detector fit
and a CLI run with the same settings therefore draw the same numbers.
"""
import dataclasses
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from cnf_jax.errors import UserInputError


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """One kind of trained flow.

  objective: 'nll' (maximum likelihood), 'contrastive' (eq. 3, clamp eps) or 'oe'
    (NLL + margin ranking loss against contrastive batches).
  fits: the rows its likelihood term is fitted to: 'inliers', 'contrastive' (the
    contrastive set, or column-permuted inlier batches) or 'probe_inliers' (the
    inliers less the eps probe's held-out split).
  seed_offset: its seed stream, model_seed = run seed * 100 + seed_offset.
  starts_from: fine-tunes the final variables of this model (fresh optimiser state).
  steps_key: the config.train key holding its number of updates.
  """
  name: str
  objective: str
  fits: str
  seed_offset: int
  starts_from: Optional[str] = None
  steps_key: str = "steps"

  @property
  def draws_contrastive(self) -> bool:
    """Whether its train step reads a contrastive batch (own rows or permuted inliers)."""
    return self.objective in ("contrastive", "oe")


# In training order: every model comes after the models it depends on.
MODELS: Dict[str, ModelSpec] = {m.name: m for m in (
    ModelSpec("flow", "nll", "inliers", seed_offset=1),
    ModelSpec("contrastive_flow", "nll", "contrastive", seed_offset=2),
    ModelSpec("eps_probe", "nll", "probe_inliers", seed_offset=3),
    ModelSpec("cf", "contrastive", "inliers", seed_offset=4),
    ModelSpec("oe", "oe", "inliers", seed_offset=5, starts_from="flow", steps_key="oe_steps"),
)}


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  """A flow-based anomaly detection method.

  models: the trained models whose log-densities it reads.
  score: {model: log p [N]} -> anomaly score [N] (higher = more anomalous).
  uses_contrastive: whether it needs contrastive data (own set or permutation).
  """
  name: str
  models: Tuple[str, ...]
  score: Callable[[Dict[str, np.ndarray]], np.ndarray]
  uses_contrastive: bool
  description: str


METHODS: Dict[str, MethodSpec] = {m.name: m for m in (
    MethodSpec("cf", ("cf",), lambda lp: -lp["cf"], True,
               "contrastive flow: -log p_cf(x), the flow trained with the clamped contrastive loss"),
    MethodSpec("flow", ("flow",), lambda lp: -lp["flow"], False,
               "maximum-likelihood flow: -log p(x)"),
    MethodSpec("flow_ratio", ("flow", "contrastive_flow"),
               lambda lp: lp["contrastive_flow"] - lp["flow"], True,
               "likelihood ratio log p_contrastive(x) - log p_flow(x) (Schirrmeister et al. 2020)"),
    MethodSpec("oe", ("oe",), lambda lp: -lp["oe"], True,
               "outlier exposure: -log p(x) of the flow fine-tuned with a margin ranking loss"),
)}
FLOW_METHODS: Tuple[str, ...] = tuple(METHODS)

# Host-side random streams of a run: numpy Generators seeded [run seed, tag].
SPLIT_STREAMS = {"eps_probe": 7, "contrastive_eval_rows": 13, "calibration": 5, "validation": 17,
                 "validation_contrastive": 19, "validation_permutation": 23}


def model_seed(run_seed: int, name: str) -> int:
  """The seed of model `name` in a run seeded `run_seed` (init, noise, batch order)."""
  return int(run_seed) * 100 + MODELS[name].seed_offset


def batch_seed(seed: int, part: str) -> int:
  """Seed of the batch stream `part` ('inlier' | 'contrastive') of a model seeded `seed`."""
  return seed + {"inlier": 0, "contrastive": 1}[part]


def split_rng(run_seed: int, stream: str) -> np.random.Generator:
  """The numpy Generator of host-side split `stream` (see SPLIT_STREAMS)."""
  return np.random.default_rng([int(run_seed), SPLIT_STREAMS[stream]])


def eps_source(eps_auto: bool, eps_holdout: float) -> Optional[str]:
  """The model whose log-densities set CF's clamp eps: 'eps_probe' (held-out inliers),
  'flow' (training inliers, eps_holdout = 0) or None (fixed eps)."""
  if not eps_auto:
    return None
  return "eps_probe" if eps_holdout > 0 else "flow"


def models_needed(methods: Sequence[str], eps_auto: bool = False, eps_holdout: float = 0.0) -> List[str]:
  """The models a run of `methods` trains, in training order (dependencies first).

  Methods that are not flow methods (the baselines) train nothing.
  """
  needed = set()
  for m in methods:
    if m in METHODS:
      needed.update(METHODS[m].models)
  if "cf" in needed and eps_source(eps_auto, eps_holdout):
    needed.add(eps_source(eps_auto, eps_holdout))
  for name in list(needed):
    while MODELS[name].starts_from:
      name = MODELS[name].starts_from
      needed.add(name)
  return [name for name in MODELS if name in needed]


def uses_contrastive(methods: Sequence[str]) -> bool:
  """Whether any flow method of `methods` reads contrastive data."""
  return any(METHODS[m].uses_contrastive for m in methods if m in METHODS)


def anomaly_scores(method: str, log_p: Dict[str, np.ndarray]) -> np.ndarray:
  """Anomaly score [N] of flow method `method` from {model: log p [N]}."""
  if method not in METHODS:
    raise ValueError(f"unknown flow method {method!r}; known: {', '.join(METHODS)}")
  return METHODS[method].score(log_p)


# ---- what each model trains on ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Objective:
  """The loss of a train step: kind 'nll' | 'contrastive' | 'oe' (see ModelSpec).

  permute: '' or a `contrastive.PERMUTE_MODES` entry: the step permutes the columns
  of the inlier batch to make the contrastive batch ('contrastive') or the batch the
  flow is fitted to ('inlier'); the batch then holds only "inlier".
  eps: the clamp of the contrastive loss (may be a traced scalar).
  """
  kind: str
  eps: float = 0.0
  permute: str = ""
  margin: float = 0.0   # oe only.
  weight: float = 1.0   # oe only.


@dataclasses.dataclass
class FitData:
  """The preprocessed rows a run's models are trained on.

  inliers: [N, D] training inliers.
  contrastive: [M, D] contrastive rows, or None (none, or `permute`).
  permute: the contrastive data are the inlier batches with every column permuted.
  probe_inliers: [N', D] the inliers the eps probe fits (inliers less its held-out split).
  mixture: a `data.mixture.Mixture` when the contrastive rows are a mixture of sources.
  val_inliers, val_contrastive: held-out rows for early stopping ([V, D], [W, D]) or None;
    with `permute`, val_contrastive is val_inliers with every column permuted once.
  """
  inliers: np.ndarray
  contrastive: Optional[np.ndarray] = None
  permute: bool = False
  probe_inliers: Optional[np.ndarray] = None
  mixture: Optional[object] = None
  val_inliers: Optional[np.ndarray] = None
  val_contrastive: Optional[np.ndarray] = None


@dataclasses.dataclass
class ModelInputs:
  """What one model trains on: x [N, D] (its 'inlier' batches), contrastive [M, D] or None,
  its Objective, {batch part: Mixture} for parts drawn from a mixture of sources, and the
  held-out rows its validation criterion (its own objective, noise-free) is computed on:
  val_x [V, D] and, for objectives with a contrastive term, val_contrastive [W, D]."""
  x: np.ndarray
  contrastive: Optional[np.ndarray]
  objective: Objective
  mixtures: Dict[str, object]
  val_x: Optional[np.ndarray] = None
  val_contrastive: Optional[np.ndarray] = None


def model_inputs(name: str, data: FitData, eps: float = 0.0, oe_margin: float = 0.0,
                 oe_weight: float = 1.0) -> ModelInputs:
  """What model `name` trains on, from the run's `data` (and CF's clamp eps)."""
  spec = MODELS[name]
  mix = data.mixture
  permute = "contrastive" if data.permute else ""
  if spec.fits == "probe_inliers":
    return ModelInputs(data.probe_inliers, None, Objective("nll"), {}, data.val_inliers)
  if spec.fits == "contrastive":
    if data.permute:  # maximum likelihood on column-permuted inlier batches
      return ModelInputs(data.inliers, None, Objective("nll", permute="inlier"), {}, data.val_contrastive)
    if data.contrastive is None:
      raise UserInputError(f"model {name!r} is fitted to the contrastive data, but the run has none")
    return ModelInputs(data.contrastive, None, Objective("nll"), {"inlier": mix} if mix else {},
                       data.val_contrastive)
  if not spec.draws_contrastive:
    return ModelInputs(data.inliers, None, Objective("nll"), {}, data.val_inliers)
  if data.contrastive is None and not data.permute:
    raise UserInputError(f"model {name!r} uses the {spec.objective} objective but there is no contrastive data")
  objective = (Objective("oe", permute=permute, margin=oe_margin, weight=oe_weight) if spec.objective == "oe"
               else Objective("contrastive", eps, permute))
  return ModelInputs(data.inliers, None if data.permute else data.contrastive, objective,
                     {"contrastive": mix} if mix else {}, data.val_inliers, data.val_contrastive)


def holdout(rows: np.ndarray, fraction: float, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
  """(kept rows, held-out rows): a random `fraction` of `rows` [N, D] held out (at least one,
  at least one kept); both keep the rows' order."""
  n_held = min(len(rows) - 1, max(1, int(round(fraction * len(rows)))))
  held = np.zeros(len(rows), bool)
  held[rng.permutation(len(rows))[:n_held]] = True
  return rows[~held], rows[held]


def with_validation(data: FitData, run_seed: int, fraction: float) -> FitData:
  """`data` with a `fraction` of the inliers and of the contrastive rows (of every source of a
  mixture) held out as validation rows, for early stopping; `fraction` = 0 returns `data`.

  The held-out rows leave the training sets, so the criterion is computed on rows no model
  trained on; split the eps probe's rows from the returned inliers (`probe_split`) afterwards.
  """
  if fraction <= 0:
    return data
  if len(data.inliers) < 2:
    raise UserInputError(f"train.validation_fraction={fraction} needs at least 2 inliers, got {len(data.inliers)}")
  inliers, val_inliers = holdout(data.inliers, fraction, split_rng(run_seed, "validation"))
  contrastive, val_contrastive, mixture = data.contrastive, None, data.mixture
  if data.permute:
    rng = split_rng(run_seed, "validation_permutation")
    val_contrastive = np.stack([val_inliers[rng.permutation(len(val_inliers)), j]
                                for j in range(val_inliers.shape[1])], axis=1)
  elif contrastive is not None:
    rng = split_rng(run_seed, "validation_contrastive")
    if mixture is None:
      contrastive, val_contrastive = holdout(contrastive, fraction, rng)
    else:  # per source, so that every source keeps rows and its weight keeps its meaning
      kept, held, sizes = [], [], []
      for offset, size in zip(mixture.offsets, mixture.sizes):
        k, h = holdout(contrastive[offset:offset + size], fraction, rng) if size > 1 else (
            contrastive[offset:offset + size], contrastive[:0])
        kept.append(k), held.append(h), sizes.append(len(k))
      contrastive, val_contrastive = np.concatenate(kept), np.concatenate(held)
      mixture = dataclasses.replace(mixture, sizes=tuple(sizes))
  return dataclasses.replace(data, inliers=inliers, contrastive=contrastive, mixture=mixture,
                             val_inliers=val_inliers, val_contrastive=val_contrastive)


def probe_split(inliers: np.ndarray, run_seed: int, holdout: float) -> Tuple[np.ndarray, np.ndarray]:
  """(held-out inliers, kept inliers) of the eps probe: a fixed permutation per run seed.

  holdout = 0: nothing is held out; the quantile is then taken on the training inliers
  themselves (both outputs are `inliers`).
  """
  if holdout <= 0:
    return inliers, inliers
  perm = split_rng(run_seed, "eps_probe").permutation(len(inliers))
  n_held = max(1, int(round(holdout * len(inliers))))
  if n_held >= len(inliers):
    raise UserInputError(f"objective.eps_holdout={holdout} leaves no inliers to train the eps probe")
  return inliers[perm[:n_held]], inliers[perm[n_held:]]
