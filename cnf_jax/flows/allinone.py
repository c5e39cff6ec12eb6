"""FrEIA's AllInOne coupling block (version 0.2 semantics) for vectors [B, D].

Forward, with d1 = D - floor(D/2), d2 = floor(D/2):

  x  <- x @ W                       (only if reverse_permutation: W^T as a column map)
  x1, x2 = x[:, :d1], x[:, d1:]
  a  = 0.1 * subnet(x1)             [B, 2*d2]
  s  = clamp(a[:, :d2]);  t = a[:, d2:]
  u  = [x1, x2 * exp(s) + t]
  y  = (gamma * u + beta) @ W^T     (gamma = Psi(g) per channel, W fixed)
  log|det J| = sum(s) + sum(log gamma)

clamp is alpha * tanh(a) in FrEIA 0.2 ("tanh") or alpha * tanh(a / alpha) on
FrEIA's later master branch ("tanh_scaled"). Psi is one of SOFTPLUS
(0.1 * softplus with beta 0.5, PyTorch's linear threshold included), SIGMOID
or EXP; `global_scale_init` inverts it so that gamma starts at the requested
value. W is orthogonal, so it adds nothing to the log-det.

The maths is in pure functions of arrays; `AllInOneBlock` only owns the
parameters (subnet, global scale `g`, global offset `beta`) and the fixed W
(collection "constants", never trained).
"""
from typing import Callable, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnf_jax.flows import conditioner as conditioner_lib
from cnf_jax.flows import permutation

CLAMP_ACTIVATIONS = ("tanh", "tanh_scaled")
GLOBAL_AFFINE_TYPES = ("SOFTPLUS", "SIGMOID", "EXP")

Array = jax.Array
Conditioner = Callable[[Array], Array]


def soft_clamp(a: Array, alpha: float, activation: str) -> Array:
  """Bounds log-scales to (-alpha, alpha)."""
  if activation == "tanh":
    return alpha * jnp.tanh(a)
  if activation == "tanh_scaled":
    return alpha * jnp.tanh(a / alpha)
  raise ValueError(f"clamp_activation must be one of {CLAMP_ACTIVATIONS}, got {activation!r}")


def global_scale_activation(g: Array, kind: str) -> Array:
  """Psi: raw per-channel parameter g -> positive global scale gamma."""
  if kind == "SOFTPLUS":
    # torch.nn.Softplus(beta=0.5): (1/beta) log(1 + exp(beta g)), linear once beta*g > 20.
    half = 0.5 * g
    softplus = jnp.where(half > 20.0, g, 2.0 * jnp.log1p(jnp.exp(jnp.minimum(half, 20.0))))
    return 0.1 * softplus
  if kind == "SIGMOID":
    return 10.0 * jax.nn.sigmoid(g - 2.0)
  if kind == "EXP":
    return jnp.exp(g)
  raise ValueError(f"global_affine_type must be one of {GLOBAL_AFFINE_TYPES}, got {kind!r}")


def global_scale_init(init: float, kind: str) -> float:
  """The raw g with global_scale_activation(g) == init (FrEIA's formulas)."""
  if kind == "SOFTPLUS":
    return float(2.0 * np.log(np.exp(0.5 * 10.0 * init) - 1.0))
  if kind == "SIGMOID":
    return float(2.0 - np.log(10.0 / init - 1.0))
  if kind == "EXP":
    return float(np.log(init))
  raise ValueError(f"global_affine_type must be one of {GLOBAL_AFFINE_TYPES}, got {kind!r}")


def split_sizes(dim: int) -> Tuple[int, int]:
  """(d1, d2): the passive first part is the larger half, as in FrEIA."""
  return dim - dim // 2, dim // 2


def _coupling_coefficients(x1, conditioner, d2, clamp, clamp_activation):
  a = 0.1 * conditioner(x1)
  s = soft_clamp(a[:, :d2], clamp, clamp_activation)
  return s, a[:, d2:]


def allinone_forward(x: Array, conditioner: Conditioner, gamma: Array, beta: Array, w: Array, *,
                     clamp: float = 2.0, clamp_activation: str = "tanh",
                     reverse_permutation: bool = False) -> Tuple[Array, Array]:
  """x [B, D] -> (y [B, D], log|det dy/dx| [B]).

  Args:
    conditioner: maps the passive half [B, d1] to raw coefficients [B, 2*d2].
    gamma: positive global scale [D] (already through Psi).
    beta: global offset [D].
    w: fixed orthogonal mixing matrix [D, D].
  """
  d1, d2 = split_sizes(x.shape[-1])
  if reverse_permutation:
    x = x @ w
  x1, x2 = x[:, :d1], x[:, d1:]
  s, t = _coupling_coefficients(x1, conditioner, d2, clamp, clamp_activation)
  u = jnp.concatenate([x1, x2 * jnp.exp(s) + t], axis=-1)
  y = (u * gamma + beta) @ w.T
  log_det = jnp.sum(s, axis=-1) + jnp.sum(jnp.log(gamma))
  return y, log_det


def allinone_inverse(y: Array, conditioner: Conditioner, gamma: Array, beta: Array, w: Array, *,
                     clamp: float = 2.0, clamp_activation: str = "tanh",
                     reverse_permutation: bool = False) -> Tuple[Array, Array]:
  """y [B, D] -> (x [B, D], log|det dx/dy| [B]); undoes `allinone_forward`."""
  d1, d2 = split_sizes(y.shape[-1])
  u = (y @ w - beta) / gamma
  x1, u2 = u[:, :d1], u[:, d1:]
  s, t = _coupling_coefficients(x1, conditioner, d2, clamp, clamp_activation)
  x = jnp.concatenate([x1, (u2 - t) * jnp.exp(-s)], axis=-1)
  if reverse_permutation:
    x = x @ w.T
  log_det = -jnp.sum(s, axis=-1) - jnp.sum(jnp.log(gamma))
  return x, log_det


class AllInOneBlock(nn.Module):
  """Parameters of one AllInOne block; the maths is `allinone_forward` / `allinone_inverse`.

  Variables: params {subnet, global_scale [D], global_offset [D]};
  constants {w_perm [D, D]} (fixed, drawn at init like FrEIA's w_perm).
  """
  dim: int
  hidden: Sequence[int] = (512, 512)
  clamp: float = 2.0
  clamp_activation: str = "tanh"
  global_affine_type: str = "SOFTPLUS"
  global_affine_init: float = 1.0
  permute_soft: bool = False
  reverse_permutation: bool = False
  zero_last: bool = False
  compute_dtype: str = "float32"

  def setup(self):
    if self.dim < 2:
      raise ValueError(f"an AllInOne block needs at least 2 features, got {self.dim}; "
                       "use block='spline' for 1-D data")
    if self.clamp_activation not in CLAMP_ACTIVATIONS:
      raise ValueError(f"clamp_activation must be one of {CLAMP_ACTIVATIONS}, got {self.clamp_activation!r}")
    _, d2 = split_sizes(self.dim)
    self.subnet = conditioner_lib.MLP(self.hidden, 2 * d2, zero_last=self.zero_last,
                                      compute_dtype=self.compute_dtype)
    g0 = global_scale_init(self.global_affine_init, self.global_affine_type)
    self.global_scale = self.param("global_scale", nn.initializers.constant(g0), (self.dim,))
    self.global_offset = self.param("global_offset", nn.initializers.zeros, (self.dim,))
    self.w_perm = self.variable(
        "constants", "w_perm",
        lambda: permutation.mixing_matrix(self.make_rng("params"), self.dim, self.permute_soft))

  def _kwargs(self):
    gamma = global_scale_activation(self.global_scale, self.global_affine_type)
    return dict(conditioner=self.subnet, gamma=gamma, beta=self.global_offset, w=self.w_perm.value,
                clamp=self.clamp, clamp_activation=self.clamp_activation,
                reverse_permutation=self.reverse_permutation)

  def forward(self, x: Array) -> Tuple[Array, Array]:
    return allinone_forward(x, **self._kwargs())

  def inverse(self, y: Array) -> Tuple[Array, Array]:
    return allinone_inverse(y, **self._kwargs())

  def __call__(self, x: Array) -> Tuple[Array, Array]:
    return self.forward(x)
