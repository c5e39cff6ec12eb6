"""Train-step throughput: cnf_jax against the paper's PyTorch + FrEIA 0.2 stack, same run.

Reference workload (issue 8): D = 128 on the unit sphere, 8 AllInOne blocks
(soft permutation, clamp 2), conditioner Linear(64, 512)-ReLU-Linear(512, 512)-
ReLU-Linear(512, 128), one Adam step on 256 inlier + 256 contrastive vectors
with the clamped contrastive loss (eps = 0).

Both implementations start from the same weights (FrEIA's, ported) and see
the same batches; the first --check_steps losses are compared (float32), then
the two are timed in alternating rounds so machine noise hits both alike, each round
after --settle seconds of idle (torch's OpenMP threads spin-wait after their work and
would otherwise slow the cnf_jax round that follows; measured: 21.5 against 29.5
steps/s). The process keeps freed host memory (cnf_jax.host_memory) for both.

  python benchmarks/train_throughput.py                       # the CLI default (bf16 on a CPU)
  python benchmarks/train_throughput.py --dtype=float32       # float32 matmuls in cnf_jax

Prints one JSON line per implementation and a last line with the ratio.
"""
import copy
import os
import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import freia_reference  # noqa: E402

from cnf_jax import cli  # noqa: E402
from cnf_jax.training import host_memory  # noqa: E402
from cnf_jax.flows import Flow, init_flow  # noqa: E402
from cnf_jax.flows.flow import resolve_compute_dtype  # noqa: E402
from cnf_jax.flows.freia_interop import variables_from_freia  # noqa: E402
from cnf_jax.training.train import Objective, TrainState, make_train_step  # noqa: E402


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_integer("dim", 128, "feature dimension D", flag_values=fv)
  flags.DEFINE_integer("blocks", 8, "AllInOne blocks", flag_values=fv)
  flags.DEFINE_integer("width", 512, "conditioner hidden width", flag_values=fv)
  flags.DEFINE_integer("depth", 2, "hidden layers of the conditioner", flag_values=fv)
  flags.DEFINE_integer("batch", 256, "inliers per step (as many contrastive)", flag_values=fv)
  flags.DEFINE_integer("steps", 30, "timed steps per round", flag_values=fv)
  flags.DEFINE_integer("rounds", 3, "timed rounds per implementation (the median counts)", flag_values=fv)
  flags.DEFINE_integer("warmup", 3, "untimed steps after the check", flag_values=fv)
  flags.DEFINE_integer("check_steps", 10, "steps whose losses are compared between the two", flag_values=fv)
  flags.DEFINE_integer("steps_per_call", 1, "cnf_jax steps per compiled call (lax.scan over a stack of batches)",
                       flag_values=fv)
  flags.DEFINE_enum("dtype", "auto", ["auto", "float32", "bfloat16"], "cnf_jax conditioner matmul dtype; auto: the "
                    "CLI default (flows.flow.resolve_compute_dtype: bfloat16 on a CPU with AMX-BF16, float32 "
                    "elsewhere) (FrEIA always runs float32)", flag_values=fv)
  flags.DEFINE_enum("impl", "both", ["both", "cnf_jax", "freia"], "which implementations to time", flag_values=fv)
  flags.DEFINE_float("settle", 0.5, "seconds of idle before each timed round, so that the other implementation's "
                     "spinning worker threads (torch's OpenMP, XLA's pool) have gone to sleep", flag_values=fv)
  flags.DEFINE_float("lr", 1e-4, "Adam learning rate", flag_values=fv)
  flags.DEFINE_float("eps", 0.0, "clamp eps of the contrastive loss", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "seed of the weights and batches", flag_values=fv)
  flags.DEFINE_string("torch_device", "cuda" if torch.cuda.is_available() else "cpu",
                      "where the FrEIA model trains (default: the GPU when there is one)", flag_values=fv)


def jax_trainer(args, inn):
  """Returns (run(batches) -> losses, sync()) for cnf_jax, starting from `inn`'s weights."""
  model = Flow(dim=args.dim, block="allinone", num_blocks=args.blocks, hidden=(args.width,) * args.depth,
               clamp=2.0, permute_soft=True, compute_dtype=resolve_compute_dtype(args.dtype))
  variables = variables_from_freia(inn, init_flow(model, jax.random.key(args.seed)))
  tx = optax.adam(args.lr)
  params = jax.tree.map(jnp.asarray, variables["params"])
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     constants=jax.tree.map(jnp.asarray, variables["constants"]), opt_state=tx.init(params))
  step = make_train_step(model, tx, Objective("contrastive", args.eps), noise_std=0.0)
  rng = jax.random.key(0)
  k = args.steps_per_call
  if k == 1:
    compiled = jax.jit(step, donate_argnums=0)
  else:
    def many(state, batches, rng):
      return jax.lax.scan(lambda s, b: step(s, b, rng), state, batches)
    compiled = jax.jit(many, donate_argnums=0)
  holder = {"state": state}

  def run(batches):
    losses = []
    if k == 1:
      for x_in, x_con in batches:
        holder["state"], metrics = compiled(holder["state"], {"inlier": x_in, "contrastive": x_con}, rng)
        losses.append(metrics["loss"])
    else:
      for i in range(0, len(batches), k):
        chunk = batches[i:i + k]
        stacked = {"inlier": np.stack([b[0] for b in chunk]), "contrastive": np.stack([b[1] for b in chunk])}
        holder["state"], metrics = compiled(holder["state"], stacked, rng)
        losses.extend(metrics["loss"])
    jax.block_until_ready(holder["state"])
    return [float(l) for l in losses]

  return run


def torch_trainer(args, inn):
  device = torch.device(args.torch_device)
  step = freia_reference.make_train_step(inn.to(device), args.lr, args.eps)

  def run(batches):
    # Losses stay on the device until the end, so a GPU run is not synchronised every step
    # (the same asynchrony the cnf_jax runner gets from JAX's dispatch).
    losses = [step(torch.from_numpy(a).to(device, non_blocking=True),
                   torch.from_numpy(b).to(device, non_blocking=True)).detach() for a, b in batches]
    return torch.stack(losses).cpu().tolist()

  return run


@cli.command
def main(argv: Sequence[str]) -> int:
  args, _ = cli.parse(define_flags, argv, __doc__)
  # Both implementations run in this process, so both get the same allocator setting
  # (CNF_JAX_HOST_MALLOC=default measures both with glibc's defaults).
  host_malloc = host_memory.configure(default="keep")
  torch.manual_seed(args.seed)
  np.random.seed(args.seed)
  inn = freia_reference.build_flow(args.dim, args.blocks, args.width, args.depth)
  runners = {}
  if args.impl in ("both", "cnf_jax"):
    runners["cnf_jax"] = jax_trainer(args, inn)
  if args.impl in ("both", "freia"):
    runners["freia"] = torch_trainer(args, copy.deepcopy(inn))

  batches = common.sphere_batches(args.check_steps + args.warmup + args.steps * args.rounds,
                                  args.batch, args.dim, args.seed)
  check, rest = batches[:args.check_steps], batches[args.check_steps:]
  losses = {name: run(check) for name, run in runners.items()}   # also compiles / warms up
  if len(losses) == 2:
    a, b = np.array(losses["cnf_jax"]), np.array(losses["freia"])
    common.emit({"check": "loss_trajectory", "steps": len(a), "max_abs_diff": float(np.abs(a - b).max()),
                 "max_rel_diff": float((np.abs(a - b) / np.maximum(np.abs(b), 1e-6)).max()),
                 "first_loss": [a[0], b[0]], "last_loss": [a[-1], b[-1]], "dtype": resolve_compute_dtype(args.dtype)})
  for run in runners.values():
    run(rest[:args.warmup])
  rest = rest[args.warmup:]

  times = {name: [] for name in runners}
  for r in range(args.rounds):
    chunk = rest[r * args.steps:(r + 1) * args.steps]
    for name, run in runners.items():
      time.sleep(args.settle)
      with common.Timer() as t:
        run(chunk)
      times[name].append(t.seconds)

  flops = common.allinone_train_flops(args.dim, args.blocks, args.width, args.depth, 2 * args.batch)
  rates = {}
  for name, ts in times.items():
    steps_per_s = common.median_rate(ts, args.steps)
    rates[name] = steps_per_s
    common.emit({"impl": name, "steps_per_s": round(steps_per_s, 3),
                 "samples_per_s": round(steps_per_s * 2 * args.batch, 1),
                 "gflops_per_s": round(steps_per_s * flops / 1e9, 1),
                 "dtype": resolve_compute_dtype(args.dtype) if name == "cnf_jax" else "float32",
                 "batch": 2 * args.batch, "steps_per_call": args.steps_per_call if name == "cnf_jax" else 1,
                 "torch_threads": torch.get_num_threads(), "host_malloc": host_malloc})
  if len(rates) == 2:
    common.emit({"ratio_cnf_jax_over_freia": round(rates["cnf_jax"] / rates["freia"], 3)})
  return 0


if __name__ == "__main__":
  cli.run(main)
