"""The machine's matmul ceiling through JAX, float32 and bfloat16 (float32 accumulation).

  python benchmarks/matmul_peak.py [--n 2048 --reps 20]

Also times the matmul shapes of the reference train step ([512, 64] x [64, 512],
[512, 512] x [512, 512], [512, 512] x [512, 128]) to show what the flow's
small products can reach.
"""
import os
import sys
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from cnf_jax import cli  # noqa: E402


def gflops(m, k, n, dtype, reps):
  a = jnp.asarray(np.random.default_rng(0).normal(size=(m, k)), dtype)
  b = jnp.asarray(np.random.default_rng(1).normal(size=(k, n)), dtype)
  # `reps` products in one program, so dispatch overhead does not count. Each input depends
  # on the previous result (through a tiny shift), so XLA cannot hoist the product out of
  # the loop; the full sum keeps it from computing only part of it.
  @jax.jit
  def chain(a, b):
    def body(acc, _):
      out = jnp.dot(a + (acc * 1e-12).astype(a.dtype), b, preferred_element_type=jnp.float32)
      return jnp.sum(out), None
    return jax.lax.scan(body, jnp.float32(0), None, length=reps)[0]
  chain(a, b).block_until_ready()
  times = []
  for _ in range(3):
    with common.Timer() as t:
      chain(a, b).block_until_ready()
    times.append(t.seconds)
  return 2.0 * m * k * n * reps / min(times) / 1e9


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_integer("n", 2048, "size of the square matmul n x n x n", flag_values=fv)
  flags.DEFINE_integer("reps", 20, "timed matmuls per measurement (x20 for the small shapes)", flag_values=fv)


@cli.command
def main(argv: Sequence[str]) -> int:
  args, _ = cli.parse(define_flags, argv, __doc__)
  for dtype in ("float32", "bfloat16"):
    common.emit({"matmul": f"{args.n}^3", "dtype": dtype,
                 "gflops_per_s": round(gflops(args.n, args.n, args.n, dtype, args.reps), 1)})
    for m, k, n in ((512, 64, 512), (512, 512, 512), (512, 512, 128)):
      common.emit({"matmul": f"{m}x{k}x{n}", "dtype": dtype,
                   "gflops_per_s": round(gflops(m, k, n, dtype, args.reps * 20), 1)})
  return 0


if __name__ == "__main__":
  cli.run(main)
