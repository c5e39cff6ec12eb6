"""A normalizing flow: K coupling blocks over a standard-normal base.

  z = f_K(...f_1(x))              (forward: data -> latent)
  log p(x) = log N(z; 0, I) + sum_k log|det J_k(x)|
           = -0.5 ||z||^2 - (D/2) log(2 pi) + log|det J|

The (D/2) log(2 pi) term is kept: the contrastive clamp threshold epsilon is an
absolute log-density, so log p must be exact.
"""
import functools
import math
from typing import Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from cnf_jax import cpu_features
from cnf_jax.flows.affine import AffineCouplingBlock
from cnf_jax.flows.allinone import AllInOneBlock
from cnf_jax.flows.spline import SplineCouplingBlock

Array = jax.Array
BLOCK_TYPES = ("allinone", "affine", "spline")


def standard_normal_log_prob(z: Array) -> Array:
  """log N(z; 0, I) for z [B, D] -> [B]."""
  dim = z.shape[-1]
  return -0.5 * jnp.sum(z * z, axis=-1) - 0.5 * dim * math.log(2.0 * math.pi)


class Flow(nn.Module):
  """A stack of `num_blocks` coupling blocks of one type.

  Call with method=Flow.log_prob / forward / inverse / sample via `Flow.apply`;
  `__call__` is `log_prob`. Variables: {"params": ..., "constants": ...}.
  """
  dim: int
  block: str = "allinone"
  num_blocks: int = 8
  hidden: Sequence[int] = (512, 512)
  zero_last: bool = False
  compute_dtype: str = "float32"   # conditioner matmuls; "bfloat16" uses bf16 units (AMX, TPU MXU).
  # AllInOne / affine options.
  clamp: float = 2.0
  clamp_activation: str = "tanh"
  global_affine_type: str = "SOFTPLUS"
  global_affine_init: float = 1.0
  permute_soft: bool = False
  reverse_permutation: bool = False
  # Spline options.
  spline_bins: int = 16
  spline_bound: float = 5.0

  def setup(self):
    if self.block == "allinone":
      make = lambda i: AllInOneBlock(
          self.dim, self.hidden, clamp=self.clamp, clamp_activation=self.clamp_activation,
          global_affine_type=self.global_affine_type, global_affine_init=self.global_affine_init,
          permute_soft=self.permute_soft, reverse_permutation=self.reverse_permutation,
          zero_last=self.zero_last, compute_dtype=self.compute_dtype, name=f"block_{i}")
    elif self.block == "affine":
      make = lambda i: AffineCouplingBlock(self.dim, self.hidden, clamp=self.clamp,
                                           zero_last=self.zero_last, compute_dtype=self.compute_dtype,
                                           name=f"block_{i}")
    elif self.block == "spline":
      make = lambda i: SplineCouplingBlock(self.dim, self.hidden, num_bins=self.spline_bins,
                                           bound=self.spline_bound, compute_dtype=self.compute_dtype,
                                           name=f"block_{i}")
    else:
      raise ValueError(f"flow block must be one of {BLOCK_TYPES}, got {self.block!r}")
    self.blocks = [make(i) for i in range(self.num_blocks)]

  def forward(self, x: Array) -> Tuple[Array, Array]:
    """x [B, D] -> (z [B, D], log|det dz/dx| [B])."""
    log_det = jnp.zeros(x.shape[:-1], x.dtype)
    for block in self.blocks:
      x, ld = block.forward(x)
      log_det = log_det + ld
    return x, log_det

  def inverse(self, z: Array) -> Tuple[Array, Array]:
    """z [B, D] -> (x [B, D], log|det dx/dz| [B])."""
    log_det = jnp.zeros(z.shape[:-1], z.dtype)
    for block in reversed(self.blocks):
      z, ld = block.inverse(z)
      log_det = log_det + ld
    return z, log_det

  def log_prob(self, x: Array) -> Array:
    """Exact log-density log p(x) [B] of x [B, D]."""
    z, log_det = self.forward(x)
    return standard_normal_log_prob(z) + log_det

  def sample(self, rng: Array, num: int) -> Array:
    """`num` samples [num, D] drawn by pushing N(0, I) through the inverse."""
    z = jax.random.normal(rng, (num, self.dim))
    return self.inverse(z)[0]

  def __call__(self, x: Array) -> Array:
    return self.log_prob(x)


# /proc/cpuinfo flags of the CPU's bfloat16 matrix unit. bf16 products pay off only with it:
# on a CPU without it XLA converts the operands to float32, and a train step of the reference
# workload took 66.9 ms in bf16 against 63.3 ms in float32, the forward pass 25.6 against
# 20.5 ms (2026-12-07, a VM whose Xeon hid AMX and AVX512-BF16; benchmarks/README.md). CPUs
# with AVX512-BF16 but no AMX were not measured and keep float32.
BF16_MATRIX_FLAGS = ("amx_bf16",)
# The values of flow.compute_dtype (and of the detector's compute_dtype).
COMPUTE_DTYPES = ("auto", "float32", "bfloat16")


@functools.lru_cache(maxsize=None)
def cpu_has_bf16_matrix_unit() -> bool:
  """Whether this machine's CPU exposes a bfloat16 matrix unit (AMX-BF16); False off Linux."""
  return any(flag in cpu_features.cpu_flags() for flag in BF16_MATRIX_FLAGS)


def resolve_compute_dtype(name: str) -> str:
  """'auto' -> 'bfloat16' where JAX runs on a CPU with a bf16 matrix unit, else 'float32'.

  On CPUs with AMX-BF16, bf16 conditioner products train 1.6-2x faster and move AUROC by about
  0.05 points (benchmarks/README.md); on a CPU without one they are slower than float32
  (BF16_MATRIX_FLAGS). On an H200 they were slower too: 391 against 583 float32 train steps/s
  at 512 vectors (benchmarks/results/gpu/bf16_check_2026-11-28.jsonl); TPUs were not measured
  and keep float32.
  """
  if name != "auto":
    return name
  return "bfloat16" if jax.default_backend() == "cpu" and cpu_has_bf16_matrix_unit() else "float32"


def flow_from_config(cfg: ml_collections.ConfigDict, dim: int) -> Flow:
  """Builds a Flow for `dim` features from a config's `flow` section."""
  return Flow(
      dim=dim, block=cfg.block, num_blocks=cfg.num_blocks, hidden=tuple(cfg.hidden),
      zero_last=cfg.zero_last, compute_dtype=resolve_compute_dtype(cfg.compute_dtype), clamp=cfg.clamp,
      clamp_activation=cfg.clamp_activation,
      global_affine_type=cfg.global_affine_type, global_affine_init=cfg.global_affine_init,
      permute_soft=cfg.permute_soft, reverse_permutation=cfg.reverse_permutation,
      spline_bins=cfg.spline_bins, spline_bound=cfg.spline_bound)


def init_flow(model: Flow, rng: Array) -> dict:
  """Initial variables {"params", "constants"} for `model`."""
  return model.init(rng, jnp.zeros((1, model.dim), jnp.float32), method=Flow.log_prob)
