"""The conditioner (FrEIA's "subnet"): an MLP from the passive half to coupling coefficients."""
from typing import Callable, Sequence

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


def row_major_transpose(a: jax.Array) -> jax.Array:
  """a.T [n, m] of a [m, n], materialised in row-major order.

  Why: XLA:CPU runs a bfloat16 matmul on its fast (AMX) path only when both operands
  are plain row-major arrays; a transposed operand, or a transpose that layout
  assignment turns into a column-major view, makes it convert both operands to
  float32 first (measured: half the speed). Passing the transpose through an
  optimisation barrier as a 1-D array leaves XLA no layout to choose but the copied,
  row-major one.
  """
  return jax.lax.optimization_barrier(a.T.reshape(-1)).reshape(a.shape[1], a.shape[0])


@jax.custom_vjp
def bf16_dense(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """x @ kernel + bias with bfloat16 products and float32 accumulation and output.

  x: [B, d_in], kernel: [d_in, d_out] and bias: [d_out], all float32.
  Returns float32 [B, d_out]. The backward pass does its two products in bfloat16 as
  well, each on plain row-major operands (see row_major_transpose); the gradients
  come back float32.
  """
  return _bf16_dense_fwd(x, kernel, bias)[0]


def _bf16_dense_fwd(x, kernel, bias):
  xb, wb = x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
  y = jnp.dot(xb, wb, preferred_element_type=jnp.float32) + bias
  return y, (xb, wb)


def _bf16_dense_bwd(residuals, dy):
  xb, wb = residuals
  dyb = dy.astype(jnp.bfloat16)
  dx = jnp.dot(dyb, row_major_transpose(wb), preferred_element_type=jnp.float32)
  dkernel = jnp.dot(row_major_transpose(xb), dyb, preferred_element_type=jnp.float32)
  return dx, dkernel, jnp.sum(dy, axis=0)


bf16_dense.defvjp(_bf16_dense_fwd, _bf16_dense_bwd)


class Dense(nn.Module):
  """nn.Dense's parameters (kernel [d_in, d_out], bias [d_out], float32) and maths.

  compute_dtype "float32": x @ kernel + bias. "bfloat16": `bf16_dense` (bf16 products,
  float32 accumulation and output), for inputs [B, d_in]; other ranks are flattened.
  """
  features: int
  kernel_init: Callable
  bias_init: Callable
  compute_dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
    if self.compute_dtype == "float32":
      return x @ kernel + bias
    lead = x.shape[:-1]
    y = bf16_dense(x.reshape(-1, x.shape[-1]).astype(jnp.float32), kernel, bias)
    return y.reshape(*lead, self.features)


class MLP(nn.Module):
  """Linear-ReLU-...-Linear, [B, d_in] -> [B, out_features].

  Attributes:
    hidden: widths of the hidden layers (the paper's subnets use e.g. (512, 512)).
    out_features: output width (2 * d2 for an affine coupling).
    zero_last: initialise the last layer to zero, so the block starts as the
      identity coupling. False gives PyTorch's default init everywhere, which is
      what FrEIA models start from.
    compute_dtype: dtype of the matrix products ("float32" or "bfloat16", the
      latter with float32 accumulation, forward and backward). Parameters,
      activations between layers and the output stay float32, so the log-scales
      and log-dets downstream are computed in float32.
  """
  hidden: Sequence[int]
  out_features: int
  zero_last: bool = False
  compute_dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    init = torch_linear_init()
    for i, width in enumerate(self.hidden):
      fan_in = x.shape[-1]
      x = Dense(width, kernel_init=init(fan_in), bias_init=init(fan_in), compute_dtype=self.compute_dtype,
                name=f"dense_{i}")(x)
      x = nn.relu(x)
    fan_in = x.shape[-1]
    if self.zero_last:
      kernel_init = bias_init = nn.initializers.zeros
    else:
      kernel_init, bias_init = init(fan_in), init(fan_in)
    return Dense(self.out_features, kernel_init=kernel_init, bias_init=bias_init,
                 compute_dtype=self.compute_dtype, name=f"dense_{len(self.hidden)}")(x)
