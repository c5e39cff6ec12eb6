"""A plain RealNVP affine coupling block followed by a fixed random permutation.

Forward, with d1 = D - floor(D/2), d2 = floor(D/2):

  x1, x2 = x[:, :d1], x[:, d1:]
  s_raw, t = split(subnet(x1))            [B, d2] each
  s = clamp * tanh(s_raw / clamp)         (soft clamp of the log-scale)
  y = [x1, x2 * exp(s) + t] @ P^T         (P a fixed permutation matrix)
  log|det J| = sum(s)

Unlike AllInOne there is no 0.1 scaling of the subnet output and no global
affine; set `zero_last` to start at the identity as in Dinh et al. (2017).
"""
from typing import Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnf_jax.flows import allinone
from cnf_jax.flows import conditioner as conditioner_lib
from cnf_jax.flows import permutation

Array = jax.Array


def affine_coupling_forward(x: Array, conditioner, perm: Array, *, clamp: float = 2.0) -> Tuple[Array, Array]:
  """x [B, D] -> (y [B, D], log|det dy/dx| [B]); `perm` is a [D, D] permutation matrix."""
  d1, d2 = allinone.split_sizes(x.shape[-1])
  x1, x2 = x[:, :d1], x[:, d1:]
  a = conditioner(x1)
  s = allinone.soft_clamp(a[:, :d2], clamp, "tanh_scaled")
  y = jnp.concatenate([x1, x2 * jnp.exp(s) + a[:, d2:]], axis=-1) @ perm.T
  return y, jnp.sum(s, axis=-1)


def affine_coupling_inverse(y: Array, conditioner, perm: Array, *, clamp: float = 2.0) -> Tuple[Array, Array]:
  """y [B, D] -> (x [B, D], log|det dx/dy| [B]); undoes `affine_coupling_forward`."""
  d1, d2 = allinone.split_sizes(y.shape[-1])
  u = y @ perm
  x1, u2 = u[:, :d1], u[:, d1:]
  a = conditioner(x1)
  s = allinone.soft_clamp(a[:, :d2], clamp, "tanh_scaled")
  x = jnp.concatenate([x1, (u2 - a[:, d2:]) * jnp.exp(-s)], axis=-1)
  return x, -jnp.sum(s, axis=-1)


class AffineCouplingBlock(nn.Module):
  """Parameters of one RealNVP block: the subnet, and a fixed permutation (constants)."""
  dim: int
  hidden: Sequence[int] = (512, 512)
  clamp: float = 2.0
  zero_last: bool = False
  compute_dtype: str = "float32"

  def setup(self):
    if self.dim < 2:
      raise ValueError(f"an affine coupling block needs at least 2 features, got {self.dim}; "
                       "use block='spline' for 1-D data")
    _, d2 = allinone.split_sizes(self.dim)
    self.subnet = conditioner_lib.MLP(self.hidden, 2 * d2, zero_last=self.zero_last,
                                      compute_dtype=self.compute_dtype)
    self.perm = self.variable(
        "constants", "perm",
        lambda: permutation.random_permutation_matrix(self.make_rng("params"), self.dim))

  def forward(self, x: Array) -> Tuple[Array, Array]:
    return affine_coupling_forward(x, self.subnet, self.perm.value, clamp=self.clamp)

  def inverse(self, y: Array) -> Tuple[Array, Array]:
    return affine_coupling_inverse(y, self.subnet, self.perm.value, clamp=self.clamp)

  def __call__(self, x: Array) -> Tuple[Array, Array]:
    return self.forward(x)
