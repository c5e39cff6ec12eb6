"""Training objectives: the standard NLL and the contrastive loss of the paper (eq. 3).

  standard:     L = E_{x~p}[-log p_theta(x)]
  contrastive:  L = E_{x~p}[-log p_theta(x)] + E_{y~q}[max(log p_theta(y), eps)]
  outlier exposure (baseline OE, Hendrycks et al. 2019a), fine-tuning a standard flow:
                L = E_{x~p}[-log p_theta(x)] + w E_{x~p, y~q}[max(0, m + log p_theta(y) - log p_theta(x))]

Minimising the contrastive loss learns the normalised positive difference
C (p - q)+ (eqs. 4-9). The clamp at eps (section 5.2.1) keeps the loss
bounded: once a contrastive sample's log-density is below eps it contributes
no gradient, so the flow only has to push q's region below eps, not to -inf.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from cnf_jax.errors import UserInputError


def nll(log_p_inlier: jax.Array) -> jax.Array:
  """Mean negative log-likelihood of inliers; log_p_inlier [B] -> scalar."""
  return -jnp.mean(log_p_inlier)


def clamped_contrastive_term(log_p_contrastive: jax.Array, eps: float) -> jax.Array:
  """mean(max(log p(y), eps)); zero gradient for samples already below eps."""
  return jnp.mean(jnp.maximum(log_p_contrastive, eps))


def contrastive_loss(log_p_inlier: jax.Array, log_p_contrastive: jax.Array, eps: float) -> jax.Array:
  """Eq. 3 with the clamp: mean(-log p(x_in)) + mean(max(log p(y_con), eps))."""
  return nll(log_p_inlier) + clamped_contrastive_term(log_p_contrastive, eps)


def oe_margin_term(log_p_inlier: jax.Array, log_p_outlier: jax.Array, margin: float) -> jax.Array:
  """mean(relu(margin + log p(y_i) - log p(x_i))) over pairs i; [B], [B'] -> scalar.

  Pairs are formed elementwise; with B != B' the first min(B, B') of each batch are
  paired (batches are random draws, so any fixed pairing is a random one).
  """
  n = min(log_p_inlier.shape[0], log_p_outlier.shape[0])
  return jnp.mean(jax.nn.relu(margin + log_p_outlier[:n] - log_p_inlier[:n]))


def oe_loss(log_p_inlier: jax.Array, log_p_outlier: jax.Array, margin: float, weight: float) -> jax.Array:
  """Outlier exposure for a density model: mean(-log p(x_in)) + weight * margin ranking term.

  The NLL term keeps the flow a density model of the inliers (over the whole inlier
  batch); the hinge asks each contrastive sample to be at least `margin` nats less
  likely than its paired inlier and is zero once it is.
  """
  return nll(log_p_inlier) + weight * oe_margin_term(log_p_inlier, log_p_outlier, margin)


def auto_eps(log_p_inlier: np.ndarray, quantile: float = 0.1, offset: float = math.log(10.0)) -> float:
  """The paper's recommended clamp: a quantile of inlier log-densities under a standard flow, plus an offset.

  Args:
    log_p_inlier: [N] log-densities of in-distribution samples under a flow
      trained by maximum likelihood.
    quantile: which quantile (paper: 10%).
    offset: added to the quantile (paper: ln 10 = 2.3).
  """
  log_p_inlier = np.asarray(log_p_inlier, dtype=np.float64)
  if log_p_inlier.size == 0:
    raise UserInputError("auto eps needs at least one inlier log-density; the inlier set is empty")
  if not np.all(np.isfinite(log_p_inlier)):
    raise UserInputError("auto eps: the standard flow gave non-finite log-densities on inliers; "
                         "check the data or set a fixed objective.eps")
  return float(np.quantile(log_p_inlier, quantile) + offset)
