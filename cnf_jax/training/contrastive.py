"""Contrastive data made on the fly from the inliers themselves.

The paper's tabular recipe (section 5.4): "as a contrastive distribution we use
the uncorrelated marginal distributions by permuting all samples in a batch per
feature dimension". Each column is shuffled independently within the batch, so
the contrastive batch keeps every marginal of the inliers but loses every
dependence between columns. A contrastive flow trained against it learns
(p - prod_j p_j)+, i.e. where the joint is denser than the product of its
marginals: anomalies that look normal column by column but break the usual
relations between columns are exactly what it can find.
"""
import jax
import jax.numpy as jnp


def permute_columns(rng: jax.Array, x: jax.Array) -> jax.Array:
  """Permutes each column of x [B, D] independently along the batch; returns [B, D].

  Column j of the result is x[pi_j, j] for an independent uniform permutation
  pi_j of range(B). Pure and jittable; a fresh `rng` per step gives fresh
  permutations.
  """
  # argsort of i.i.d. uniforms is a uniform random permutation, one per column.
  order = jnp.argsort(jax.random.uniform(rng, x.shape), axis=0)
  return jnp.take_along_axis(x, order, axis=0)


# How a train step uses the permutation (Objective.permute / the detector's `permute`):
#   'contrastive': the contrastive batch is the inlier batch, columns permuted (the CF's q);
#   'inlier':      the batch the flow is fitted to is permuted (flow_ratio's contrastive flow,
#                  trained by maximum likelihood on q).
PERMUTE_MODES = ("contrastive", "inlier")


def permuted_batch(rng: jax.Array, batch: dict, mode: str) -> dict:
  """The train-step batch with the permuted inlier rows in place (see PERMUTE_MODES)."""
  shuffled = permute_columns(rng, batch["inlier"])
  if mode == "inlier":
    return {"inlier": shuffled}
  if mode == "contrastive":
    return {**batch, "contrastive": shuffled}
  raise ValueError(f"permute mode {mode!r} is not one of {PERMUTE_MODES}")
