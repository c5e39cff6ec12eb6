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

  python benchmarks/train_throughput.py                       # float32
  python benchmarks/train_throughput.py --dtype=bfloat16      # bf16 matmuls in cnf_jax

Prints one JSON line per implementation and a last line with the ratio.
"""
import argparse
import copy
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import freia_reference  # noqa: E402

from cnf_jax.training import host_memory  # noqa: E402
from cnf_jax.flows import Flow, init_flow  # noqa: E402
from cnf_jax.flows.freia_interop import variables_from_freia  # noqa: E402
from cnf_jax.training.train import Objective, TrainState, make_train_step  # noqa: E402


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dim", type=int, default=128)
  p.add_argument("--blocks", type=int, default=8)
  p.add_argument("--width", type=int, default=512)
  p.add_argument("--depth", type=int, default=2, help="hidden layers of the conditioner")
  p.add_argument("--batch", type=int, default=256, help="inliers per step (as many contrastive)")
  p.add_argument("--steps", type=int, default=30, help="timed steps per round")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--check_steps", type=int, default=10)
  p.add_argument("--steps_per_call", type=int, default=1,
                 help="cnf_jax steps per compiled call (lax.scan over a stack of batches)")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                 help="cnf_jax conditioner matmul dtype (FrEIA always runs float32)")
  p.add_argument("--impl", choices=("both", "cnf_jax", "freia"), default="both")
  p.add_argument("--settle", type=float, default=0.5,
                 help="seconds of idle before each timed round, so that the other implementation's "
                      "spinning worker threads (torch's OpenMP, XLA's pool) have gone to sleep")
  p.add_argument("--lr", type=float, default=1e-4)
  p.add_argument("--eps", type=float, default=0.0)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--torch_device", default="cuda" if torch.cuda.is_available() else "cpu",
                 help="where the FrEIA model trains (default: the GPU when there is one)")
  return p.parse_args(argv)


def jax_trainer(args, inn):
  """Returns (run(batches) -> losses, sync()) for cnf_jax, starting from `inn`'s weights."""
  model = Flow(dim=args.dim, block="allinone", num_blocks=args.blocks, hidden=(args.width,) * args.depth,
               clamp=2.0, permute_soft=True, compute_dtype=args.dtype)
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


def main(argv=None):
  args = parse_args(argv)
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
                 "first_loss": [a[0], b[0]], "last_loss": [a[-1], b[-1]], "dtype": args.dtype})
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
                 "dtype": args.dtype if name == "cnf_jax" else "float32",
                 "batch": 2 * args.batch, "steps_per_call": args.steps_per_call if name == "cnf_jax" else 1,
                 "torch_threads": torch.get_num_threads(), "host_malloc": host_malloc})
  if len(rates) == 2:
    common.emit({"ratio_cnf_jax_over_freia": round(rates["cnf_jax"] / rates["freia"], 3)})


if __name__ == "__main__":
  main()
