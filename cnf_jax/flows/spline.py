"""A rational-quadratic spline coupling block (Durkan et al. 2019), via distrax.

Forward, with the *active* part the larger half (d_p = floor(D/2) passive,
d_a = D - d_p active), so that D = 1 works (the conditioner then sees an
empty input and its output is a learned constant, i.e. an unconditional
monotone spline: the 1-D flow of the paper's Fig. 3 toy):

  xp, xa = x[:, :d_p], x[:, d_p:]
  theta = subnet(xp)                       [B, d_a * (3K + 1)]
  ya = RQS_theta(xa)  (identity outside [-bound, bound])
  y = [xp, ya] @ P^T                       (P a fixed permutation)
  log|det J| = sum(log RQS'(xa))
"""
from typing import Sequence, Tuple

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp

from cnf_jax.flows import conditioner as conditioner_lib
from cnf_jax.flows import permutation

Array = jax.Array


def _spline(theta: Array, d_active: int, num_bins: int, bound: float) -> distrax.RationalQuadraticSpline:
  theta = theta.reshape(theta.shape[:-1] + (d_active, 3 * num_bins + 1))
  return distrax.RationalQuadraticSpline(theta, range_min=-bound, range_max=bound,
                                         boundary_slopes="identity")


def spline_coupling_forward(x: Array, conditioner, perm: Array, *, num_bins: int = 16,
                            bound: float = 5.0) -> Tuple[Array, Array]:
  """x [B, D] -> (y [B, D], log|det dy/dx| [B])."""
  d_passive = x.shape[-1] // 2
  xp, xa = x[:, :d_passive], x[:, d_passive:]
  spline = _spline(conditioner(xp), xa.shape[-1], num_bins, bound)
  ya, log_det = spline.forward_and_log_det(xa)
  return jnp.concatenate([xp, ya], axis=-1) @ perm.T, jnp.sum(log_det, axis=-1)


def spline_coupling_inverse(y: Array, conditioner, perm: Array, *, num_bins: int = 16,
                            bound: float = 5.0) -> Tuple[Array, Array]:
  """y [B, D] -> (x [B, D], log|det dx/dy| [B]); undoes `spline_coupling_forward`."""
  u = y @ perm
  d_passive = u.shape[-1] // 2
  xp, ua = u[:, :d_passive], u[:, d_passive:]
  spline = _spline(conditioner(xp), ua.shape[-1], num_bins, bound)
  xa, log_det = spline.inverse_and_log_det(ua)
  return jnp.concatenate([xp, xa], axis=-1), jnp.sum(log_det, axis=-1)


class SplineCouplingBlock(nn.Module):
  """Parameters of one spline coupling block: the subnet and a fixed permutation (constants).

  The last subnet layer starts at zero by default: zero spline parameters are
  the identity map, so an untrained flow is the base distribution. For D = 1
  there is no subnet (and `hidden` is unused): the parameters are a learned
  vector "theta".
  """
  dim: int
  hidden: Sequence[int] = (64, 64)
  num_bins: int = 16
  bound: float = 5.0
  zero_last: bool = True
  compute_dtype: str = "float32"

  def setup(self):
    d_active = self.dim - self.dim // 2
    num_params = d_active * (3 * self.num_bins + 1)
    if self.dim // 2 == 0:
      # D = 1: nothing to condition on, so the spline parameters are learned directly.
      theta = self.param("theta", nn.initializers.zeros, (num_params,))
      self.subnet = lambda xp: jnp.broadcast_to(theta, xp.shape[:-1] + (num_params,))
    else:
      self.subnet = conditioner_lib.MLP(self.hidden, num_params, zero_last=self.zero_last,
                                      compute_dtype=self.compute_dtype)
    self.perm = self.variable(
        "constants", "perm",
        lambda: permutation.random_permutation_matrix(self.make_rng("params"), self.dim))

  def _kwargs(self):
    return dict(conditioner=self.subnet, perm=self.perm.value, num_bins=self.num_bins, bound=self.bound)

  def forward(self, x: Array) -> Tuple[Array, Array]:
    return spline_coupling_forward(x, **self._kwargs())

  def inverse(self, y: Array) -> Tuple[Array, Array]:
    return spline_coupling_inverse(y, **self._kwargs())

  def __call__(self, x: Array) -> Tuple[Array, Array]:
    return self.forward(x)
