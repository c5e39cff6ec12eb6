"""Scoring throughput (vectors/s): log p of the reference model, cnf_jax against PyTorch + FrEIA.

  python benchmarks/score_throughput.py [--num 65536 --chunk 8192 --dtype float32]

Same weights (FrEIA's, ported); the scores are compared before timing.
"""
import os
import sys
import time
from typing import Sequence

import jax
import numpy as np
import torch
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import freia_reference  # noqa: E402

from cnf_jax import cli  # noqa: E402
from cnf_jax.training import host_memory  # noqa: E402
from cnf_jax.evaluation import metrics  # noqa: E402
from cnf_jax.flows import Flow, init_flow  # noqa: E402
from cnf_jax.flows.freia_interop import variables_from_freia  # noqa: E402


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_integer("dim", 128, "feature dimension D", flag_values=fv)
  flags.DEFINE_integer("blocks", 8, "AllInOne blocks", flag_values=fv)
  flags.DEFINE_integer("width", 512, "conditioner hidden width (two hidden layers)", flag_values=fv)
  flags.DEFINE_integer("num", 65536, "vectors scored per round", flag_values=fv)
  flags.DEFINE_integer("chunk", 8192, "vectors per compiled call", flag_values=fv)
  flags.DEFINE_integer("rounds", 3, "timed rounds per implementation (the median counts)", flag_values=fv)
  flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "cnf_jax conditioner matmul dtype",
                    flag_values=fv)
  flags.DEFINE_float("settle", 0.5, "seconds of idle before each timed round (see train_throughput.py)",
                     flag_values=fv)
  flags.DEFINE_string("torch_device", "cuda" if torch.cuda.is_available() else "cpu",
                      "where the FrEIA model scores (default: the GPU when there is one)", flag_values=fv)


@cli.command
def main(argv: Sequence[str]) -> int:
  args, _ = cli.parse(define_flags, argv, __doc__)
  host_malloc = host_memory.configure(default="keep")   # for both implementations

  torch.manual_seed(0)
  np.random.seed(0)
  inn = freia_reference.build_flow(args.dim, args.blocks, args.width).eval()
  model = Flow(dim=args.dim, block="allinone", num_blocks=args.blocks, hidden=(args.width, args.width),
               clamp=2.0, permute_soft=True, compute_dtype=args.dtype)
  variables = variables_from_freia(inn, init_flow(model, jax.random.key(0)))
  log_prob = metrics.make_log_prob_fn(model, args.chunk)
  device = torch.device(args.torch_device)
  inn = inn.to(device)
  x = np.concatenate([a for pair in common.sphere_batches(args.num // 512, 256, args.dim) for a in pair])

  def score_torch(x):
    with torch.inference_mode():
      # Host array in, host array out: the same contract as cnf_jax's log_prob(variables, x).
      return torch.cat([freia_reference.log_prob(inn, torch.from_numpy(x[i:i + args.chunk]).to(device))
                        for i in range(0, len(x), args.chunk)]).cpu().numpy()

  ours, ref = log_prob(variables, x), score_torch(x)
  common.emit({"check": "scores", "max_abs_diff": float(np.abs(ours - ref).max()), "dtype": args.dtype})
  times = {"cnf_jax": [], "freia": []}
  for _ in range(args.rounds):
    for name, fn in (("cnf_jax", lambda: log_prob(variables, x)), ("freia", lambda: score_torch(x))):
      time.sleep(args.settle)   # the other implementation's spinning worker threads go to sleep first
      with common.Timer() as t:
        fn()
      times[name].append(t.seconds)
  rates = {k: common.median_rate(v, len(x)) for k, v in times.items()}
  for name, rate in rates.items():
    common.emit({"impl": name, "vectors_per_s": round(rate, 1), "dtype": args.dtype if name == "cnf_jax" else "float32",
                 "host_malloc": host_malloc})
  common.emit({"ratio_cnf_jax_over_freia": round(rates["cnf_jax"] / rates["freia"], 3)})
  return 0


if __name__ == "__main__":
  cli.run(main)
