"""Where a train step's time goes on this machine, float32 against bfloat16: a profile by parts.

  python benchmarks/step_breakdown.py [--batch 256 --reps 20]

Times, for the reference workload (issue 8) in each conditioner dtype, the forward pass
(log p of 2 x batch vectors), forward + backward (value_and_grad of the contrastive loss) and
the whole step (plus Adam), each as `reps` iterations inside one compiled lax.scan so that
dispatch does not count. Then the three matmuls every dense layer does in a step, for the
flow's largest layer (512 x 512, 2 x batch rows): forward x @ W, backward dy @ W^T and the
weight gradient x^T @ dy, the last two also with the transposed operand copied to row-major
order first (what the bfloat16 conditioner's backward does).
Prints one JSON line per measurement.
"""
import os
import sys
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from cnf_jax import cli  # noqa: E402
from cnf_jax.training import host_memory  # noqa: E402
from cnf_jax.training import objectives  # noqa: E402
from cnf_jax.flows import Flow, init_flow  # noqa: E402
from cnf_jax.flows.conditioner import row_major_transpose  # noqa: E402
from cnf_jax.training.train import Objective, TrainState, make_train_step  # noqa: E402


def timed(fn, *args):
  """Best of 3 wall times of the compiled fn(*args) (after one compiling call)."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(3):
    with common.Timer() as t:
      jax.block_until_ready(fn(*args))
    times.append(t.seconds)
  return min(times)


def parts(dtype: str, batch: int, reps: int, dim: int = 128, width: int = 512):
  model = Flow(dim=dim, block="allinone", num_blocks=8, hidden=(width, width), clamp=2.0,
               permute_soft=True, compute_dtype=dtype)
  variables = init_flow(model, jax.random.key(0))
  x_in, x_con = (jnp.asarray(a) for a in common.sphere_batches(1, batch, dim)[0])
  x = jnp.concatenate([x_in, x_con])

  def loss(params, x):
    lp = model.apply({"params": params, "constants": variables["constants"]}, x, method=Flow.log_prob)
    return objectives.contrastive_loss(lp[:batch], lp[batch:], 0.0)

  def repeat(body):  # reps dependent iterations in one program
    return jax.jit(lambda p, x: jax.lax.scan(lambda c, _: (body(p, x + c * 1e-12), None), 0.0, None, length=reps)[0])

  forward = repeat(lambda p, x: jnp.sum(model.apply({"params": p, "constants": variables["constants"]}, x,
                                                    method=Flow.log_prob)))
  grad = repeat(lambda p, x: optax.tree.norm(jax.grad(loss)(p, x)))
  tx = optax.adam(1e-4)
  step = make_train_step(model, tx, Objective("contrastive", 0.0), noise_std=0.0)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                     constants=variables["constants"], opt_state=tx.init(variables["params"]))
  many = jax.jit(lambda s, b: jax.lax.scan(lambda s, _: (step(s, b, jax.random.key(0))[0], None), s, None,
                                           length=reps)[0])
  batch_dict = {"inlier": x_in, "contrastive": x_con}
  flops = common.allinone_train_flops(dim, 8, width, 2, 2 * batch)
  out = {"forward": timed(forward, variables["params"], x) / reps,
         "forward_backward": timed(grad, variables["params"], x) / reps,
         "step": timed(many, state, batch_dict) / reps}
  for name, seconds in out.items():
    share = {"forward": 1 / 3, "forward_backward": 1.0, "step": 1.0}[name]
    common.emit({"part": name, "dtype": dtype, "ms": round(seconds * 1e3, 3),
                 "gflops_per_s": round(flops * share / seconds / 1e9, 1)})


def layer_matmuls(dtype: str, rows: int, reps: int, width: int = 512):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(rows, width)), dtype)
  w = jnp.asarray(rng.normal(size=(width, width)), dtype)
  dy = jnp.asarray(rng.normal(size=(rows, width)), dtype)
  f32 = jnp.float32
  products = {"forward x@W": lambda a, b, c: jnp.dot(a, b, preferred_element_type=f32),
              "backward dy@W^T": lambda a, b, c: jnp.dot(c, b.T, preferred_element_type=f32),
              "weight grad x^T@dy": lambda a, b, c: jnp.dot(a.T, c, preferred_element_type=f32),
              # The same products with the transpose copied into row-major order first, as the
              # bf16 conditioner's backward does (cnf_jax.flows.conditioner.row_major_transpose):
              # the plain-layout speed comes back. (A transpose behind a 2-D optimisation barrier
              # does not: layout assignment keeps it a column-major view.)
              "backward dy@(W^T row-major)": lambda a, b, c: jnp.dot(
                  c, row_major_transpose(b), preferred_element_type=f32),
              "weight grad (x^T row-major)@dy": lambda a, b, c: jnp.dot(
                  row_major_transpose(a), c, preferred_element_type=f32)}
  for name, product in products.items():
    # Both row-sized inputs depend on the running sum, so no product can be hoisted out of the loop.
    fn = jax.jit(lambda a, b, c, product=product: jax.lax.scan(
        lambda s, _: (s + jnp.sum(product(a + (s * 1e-12).astype(a.dtype), b, c + (s * 1e-12).astype(c.dtype))),
                      None), f32(0), None, length=reps)[0])
    seconds = timed(fn, x, w, dy) / reps
    common.emit({"matmul": name, "shape": f"{rows}x{width}x{width}", "dtype": dtype,
                 "gflops_per_s": round(2 * rows * width * width / seconds / 1e9, 1)})


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_integer("batch", 256, "inliers per step (as many contrastive)", flag_values=fv)
  flags.DEFINE_integer("reps", 20, "iterations per measurement (x10 for the matmuls)", flag_values=fv)


@cli.command
def main(argv: Sequence[str]) -> int:
  args, _ = cli.parse(define_flags, argv, __doc__)
  host_memory.configure(default="keep")
  for dtype in ("float32", "bfloat16"):
    parts(dtype, args.batch, args.reps)
  for dtype in ("float32", "bfloat16"):
    layer_matmuls(dtype, 2 * args.batch, args.reps * 10)
  return 0


if __name__ == "__main__":
  cli.run(main)
