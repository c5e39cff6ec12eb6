"""What a run records about its contrastive data, for the ablations of paper 5.3 and 5.4.

results.json gets "contrastive_mixture" (sources, weights, sizes and, per model
that draws from it, the fractions actually drawn over training) or
"contrastive": "permute"; scores.npz gets the anomaly scores of a sample of the
contrastive data ("contrastive_score_<method>", "contrastive_source"), which
the score histograms of Fig. 8 and 9 plot next to the test sets.
"""
from typing import Optional, Tuple

import numpy as np

from cnf_jax.data import mixture as mixture_lib
from cnf_jax.data.task_data import TaskData
from cnf_jax.training import plan

# Contrastive rows scored for the histograms, per source (and in total without a mixture).
MAX_EVAL_ROWS = 5000


def contrastive_record(run) -> dict:
  """results.json entries describing the contrastive data of `run` (an experiment.Run)."""
  data, tc, seed = run.data, run.config.train, run.config.seed
  if data.contrastive_permute:
    return {"contrastive": "permute"}
  mix = run.fit_data.mixture   # the training rows' mixture (less any validation rows)
  if mix is None:
    return {}
  # The samplers the models used (the seeds and batch sizes of training.loop), replayed.
  drawn = {}
  if "cf" in run.model_names:
    sampler = mixture_lib.MixtureSampler(mix, tc.contrastive_batch_size,
                                         plan.batch_seed(plan.model_seed(seed, "cf"), "contrastive"))
    drawn["cf"] = sampler.realised_fractions(tc.steps)
  if "contrastive_flow" in run.model_names:
    sampler = mixture_lib.MixtureSampler(mix, tc.batch_size,
                                         plan.batch_seed(plan.model_seed(seed, "contrastive_flow"), "inlier"))
    drawn["contrastive_flow"] = sampler.realised_fractions(tc.steps)
  return {"contrastive_mixture": {"sources": list(mix.names), "weights": list(mix.weights),
                                  "sizes": list(mix.sizes), "realised_fractions": drawn}}


def contrastive_eval_rows(data: TaskData, seed: int) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
  """(rows [K, D], source id [K]) of contrastive data to score, or (None, None) without any.

  Mixture: up to MAX_EVAL_ROWS rows of every source of weight > 0 (source id =
  its position in the mixture). Plain contrastive set: up to MAX_EVAL_ROWS rows
  (id 0). Column permutation: the training inliers with every column permuted
  (id 0), i.e. what the contrastive batches are drawn from.
  """
  rng = plan.split_rng(seed, "contrastive_eval_rows")
  pick = lambda n: np.sort(rng.choice(n, MAX_EVAL_ROWS, replace=False)) if n > MAX_EVAL_ROWS else np.arange(n)
  if data.contrastive_permute:
    rows = data.inliers[pick(len(data.inliers))]
    cols = [rows[rng.permutation(len(rows)), j] for j in range(rows.shape[1])]
    return np.stack(cols, axis=1), np.zeros(len(rows), np.int64)
  if data.contrastive is None:
    return None, None
  mix = data.contrastive_mixture
  if mix is None:
    return data.contrastive[pick(len(data.contrastive))], np.zeros(min(len(data.contrastive), MAX_EVAL_ROWS),
                                                                   np.int64)
  rows, ids = [], []
  for j, (weight, size, offset) in enumerate(zip(mix.weights, mix.sizes, mix.offsets)):
    if weight > 0:
      rows.append(data.contrastive[offset + pick(size)])
      ids.append(np.full(len(rows[-1]), j, np.int64))
  return np.concatenate(rows), np.concatenate(ids)
