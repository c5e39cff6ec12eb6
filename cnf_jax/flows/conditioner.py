"""The conditioner (FrEIA's "subnet"): an MLP from the passive half to coupling coefficients."""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def torch_linear_init(scale: float = 1.0):
  """PyTorch's nn.Linear default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for weight and bias.

  Flax passes no fan-in to bias initialisers, so the module computes it and
  binds it here. With fan_in = 0 (a conditioner with no input) the bound is 1.
  """
  def init(fan_in):
    bound = scale / jnp.sqrt(jnp.maximum(fan_in, 1))

    def sample(rng, shape, dtype=jnp.float32):
      return jax.random.uniform(rng, shape, dtype, -bound, bound)
    return sample
  return init


class MLP(nn.Module):
  """Linear-ReLU-...-Linear, [B, d_in] -> [B, out_features].

  Attributes:
    hidden: widths of the hidden layers (the paper's subnets use e.g. (512, 512)).
    out_features: output width (2 * d2 for an affine coupling).
    zero_last: initialise the last layer to zero, so the block starts as the
      identity coupling. False gives PyTorch's default init everywhere, which is
      what FrEIA models start from.
    compute_dtype: dtype of the matrix products ("float32" or "bfloat16").
      Parameters stay float32; the output is always float32, so the log-scales
      and log-dets downstream are computed in float32.
  """
  hidden: Sequence[int]
  out_features: int
  zero_last: bool = False
  compute_dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    init = torch_linear_init()
    dtype = jnp.dtype(self.compute_dtype)
    for i, width in enumerate(self.hidden):
      fan_in = x.shape[-1]
      x = nn.Dense(width, kernel_init=init(fan_in), bias_init=init(fan_in), dtype=dtype,
                   name=f"dense_{i}")(x)
      x = nn.relu(x)
    fan_in = x.shape[-1]
    if self.zero_last:
      kernel_init = bias_init = nn.initializers.zeros
    else:
      kernel_init, bias_init = init(fan_in), init(fan_in)
    out = nn.Dense(self.out_features, kernel_init=kernel_init, bias_init=bias_init, dtype=dtype,
                   name=f"dense_{len(self.hidden)}")(x)
    return out.astype(jnp.float32)
