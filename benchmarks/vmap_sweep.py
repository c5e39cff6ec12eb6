"""Wall time of a one-class sweep (10 classes x 3 seeds = 30 contrastive flows): vmapped versus one after another.

  PYTHONPATH=. python benchmarks/vmap_sweep.py                       # paper-size flow, 20 and 40 steps
  PYTHONPATH=. python benchmarks/vmap_sweep.py --hidden=64 --blocks=4  # a small flow (overhead-bound)

Both modes go through the real training code: `train.fit_flow` once per model
(each run compiles its own step and writes its own checkpoint, as separate
`cnf_jax.main` runs would) against `loop.fit_models` with 30 jobs (one program for all 30).
Each mode runs twice, with S and 2S steps, each time in a fresh process (so
no compilation is cached from an earlier measurement), and
wall = fixed + S * per_step separates the fixed cost (compilation,
initialisation, checkpoints) from the cost per step; the full 3000-step sweep
is extrapolated from the two. The sequential runs share one process, so from
the second run on JAX may reuse compiled code; separate `cnf_jax.main`
processes could not, so the sequential figure is, if anything, optimistic.

Data is synthetic, shaped like the paper's: unit-sphere vectors, D = 128,
5,000 inliers per class (each class a cloud around its own direction) and
10,000 shared contrastive vectors; batches 256 inliers + 256 contrastive.
Prints one JSON object.

Measured (2 CPU cores shared with other jobs, load average ~3, so noisy; 2026-11-28):
  PYTHONPATH=. python benchmarks/vmap_sweep.py --steps=10
    30 models, 8 AllInOne blocks, hidden 512x2, D=128, batch 256+256, 1 CPU device
    vmapped:    10 steps 49.7 s, 20 steps 96.4 s  -> 4.67 s per step of all 30 models
    sequential: 10 steps 153.6 s, 20 steps 212.5 s -> 5.89 s per step, ~95 s fixed (30 compilations,
                initialisations and checkpoint managers)
    speed-up 2.2x at 20 steps; extrapolated to the 3,000-step sweep 17,765 s / 14,007 s = 1.27x
    max |param difference| vmapped vs sequential after 20 steps: 4.2e-4 (float32, batched matmuls)
  PYTHONPATH=. python benchmarks/vmap_sweep.py --hidden=64 --blocks=4 --steps=25
    vmapped 25 steps 38.4 s, 50 steps 69.2 s; sequential 25 steps 155.4 s, 50 steps 116.2 s (sic: the
    machine's load changed between the two, so the fixed/per-step split of the sequential figures is
    meaningless here); measured speed-up 4.1x at 25 steps, 1.7x at 50; max |param diff| 1.1e-4.
On a CPU the step is compute-bound (the paper-size flow keeps both cores busy), so vmap mostly
saves the fixed costs and some per-step overhead; on an accelerator a single small flow leaves
most of the chip idle and the gain per step is the point (not measured: no GPU was lent).
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Sequence

import jax
import numpy as np
from absl import flags

from cnf_jax import cli
from cnf_jax.experiments import config_lib
from cnf_jax.flows import flow_from_config
from cnf_jax.training import loop
from cnf_jax.training import plan
from cnf_jax.training.loop import fit_flow
from cnf_jax.training.plan import Objective
from cnf_jax.training.summaries import MetricsWriter


def sphere(x):
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic_features(num_classes, dim, per_class, num_contrastive, seed=0):
  """Inliers per class [per_class, dim] around a random direction, contrastive [num_contrastive, dim]."""
  rng = np.random.default_rng(seed)
  centres = sphere(rng.normal(size=(num_classes, dim)))
  inliers = [sphere(c + 0.08 * rng.normal(size=(per_class, dim))) for c in centres]
  return inliers, sphere(rng.normal(size=(num_contrastive, dim)))


def make_config(args, steps):
  c = config_lib.default_config()
  c.flow.num_blocks, c.flow.hidden, c.flow.permute_soft = args.blocks, (args.hidden, args.hidden), True
  c.train.steps, c.train.batch_size, c.train.contrastive_batch_size = steps, args.batch, args.batch
  c.train.log_every = c.train.checkpoint_every = steps
  c.train.warmup_steps = 1  # (warm-up >= steps would leave the cosine no steps to decay over)
  c.train.parallel = "single"
  return c


def run(mode, args, steps, inliers, contrastive, root):
  config = make_config(args, steps)
  model = flow_from_config(config.flow, args.dim)
  jobs = [(k, s) for s in range(args.seeds) for k in range(args.classes)]
  workdirs = [os.path.join(root, f"{mode}{steps}", f"class{k}_seed{s}") for k, s in jobs]
  writers = [MetricsWriter(os.path.join(w, "metrics.jsonl")) for w in workdirs]
  for w in workdirs:
    os.makedirs(w, exist_ok=True)
  objective = Objective("contrastive", 0.0)
  start = time.perf_counter()
  if mode == "sequential":
    out = [fit_flow("cf", model, config, inliers[k], contrastive, objective, w, s, wr)
           for (k, s), w, wr in zip(jobs, workdirs, writers)]
  else:
    out = [f.variables for f in loop.fit_models(
        model, config.train, config.preprocess.noise_std,
        [loop.Job(plan.ModelInputs(inliers[k], contrastive, objective, {}), s, None,
                  os.path.join(w, "checkpoints", "cf"), wr, f"model 'cf' of run {w}")
         for (k, s), w, wr in zip(jobs, workdirs, writers)], name="cf")]
  jax.block_until_ready(out)
  return time.perf_counter() - start, out


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_integer("classes", 10, "inlier classes (one model each per seed)", flag_values=fv)
  flags.DEFINE_integer("seeds", 3, "seeds per class", flag_values=fv)
  flags.DEFINE_integer("steps", 20, "S; each mode also runs 2S steps", flag_values=fv)
  flags.DEFINE_integer("full_steps", 3000, "steps of the real sweep, for the extrapolation", flag_values=fv)
  flags.DEFINE_integer("dim", 128, "feature dimension D", flag_values=fv)
  flags.DEFINE_integer("blocks", 8, "AllInOne blocks", flag_values=fv)
  flags.DEFINE_integer("hidden", 512, "conditioner hidden width (two hidden layers)", flag_values=fv)
  flags.DEFINE_integer("batch", 256, "inliers per step (as many contrastive)", flag_values=fv)
  flags.DEFINE_string("measure", "", "internal: 'mode,steps,root', one measurement in this process", flag_values=fv)


@cli.command
def main(argv: Sequence[str]) -> int:
  args, _ = cli.parse(define_flags, argv, __doc__)
  if args.measure:  # one measurement in this fresh process: print seconds and the parameters' path
    mode, steps, root = args.measure.split(",")
    inliers, contrastive = synthetic_features(args.classes, args.dim, 5000, 10000)
    seconds, out = run(mode, args, int(steps), inliers, contrastive, root)
    np.savez(os.path.join(root, f"{mode}{steps}.npz"),
             *[np.asarray(x) for v in out for x in jax.tree.leaves(v["params"])])
    print(json.dumps({"seconds": seconds}))
    return 0
  figures = {"models": args.classes * args.seeds, "flow": f"{args.blocks} AllInOne blocks, hidden "
             f"{args.hidden}x2, D={args.dim}", "batch": f"{args.batch}+{args.batch}",
             "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
             "cpu_count": os.cpu_count(), "data": "synthetic unit-sphere vectors"}
  results = {}
  with tempfile.TemporaryDirectory() as root:
    for mode in ("vmapped", "sequential"):
      for steps in (args.steps, 2 * args.steps):
        cmd = [sys.executable, __file__, *argv, f"--measure={mode},{steps},{root}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        seconds = json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]
        with np.load(os.path.join(root, f"{mode}{steps}.npz")) as f:
          results[(mode, steps)] = [f[k] for k in f.files]
        figures[f"{mode}_{steps}_steps_s"] = round(seconds, 2)
        print(f"{mode} {steps} steps: {seconds:.1f} s", file=sys.stderr)
  for mode in ("vmapped", "sequential"):
    short, long = figures[f"{mode}_{args.steps}_steps_s"], figures[f"{mode}_{2 * args.steps}_steps_s"]
    per_step = (long - short) / args.steps            # seconds per step of all 30 models
    fixed = short - args.steps * per_step
    figures[f"{mode}_fixed_s"] = round(fixed, 2)
    figures[f"{mode}_per_step_all_models_ms"] = round(1000 * per_step, 2)
    figures[f"{mode}_full_sweep_estimate_s"] = round(fixed + args.full_steps * per_step, 1)
  figures["speedup_measured_2S_steps"] = round(figures[f"sequential_{2 * args.steps}_steps_s"] /
                                               figures[f"vmapped_{2 * args.steps}_steps_s"], 2)
  figures["speedup_full_sweep_estimate"] = round(figures["sequential_full_sweep_estimate_s"] /
                                                 figures["vmapped_full_sweep_estimate_s"], 2)
  # Sanity: the vmapped models are the sequential ones.
  a, b = results[("vmapped", 2 * args.steps)], results[("sequential", 2 * args.steps)]
  figures["max_abs_param_diff"] = float(max(np.abs(x - y).max() for x, y in zip(a, b)))
  print(json.dumps(figures, indent=1))
  return 0


if __name__ == "__main__":
  cli.run(main)
