"""One checkpoint round of a vmapped sweep: every model's orbax saves one after another against
the loop's threaded round (`loop.save_checkpoints`).

  python benchmarks/checkpoint_throughput.py                      # 30 paper-size models, 1 vs 8 threads
  python benchmarks/checkpoint_throughput.py --models=10 --threads=1,4,8 --rounds=3

A round is what `loop.fit_models` writes at a checkpoint step: per model its TrainState
(parameters and Adam's two moments) and its early-stopping record with the best parameters
(`<dir>.validation`), into fresh directories. The thread counts alternate within each round, so
every setting sees the same machine load. The saved trees are restored afterwards and compared
with what was saved. Prints one JSON line per round and setting, then a summary line with the
median seconds per setting and their ratio to the first setting.
"""
import argparse
import functools
import os
import shutil
import statistics
import tempfile
import time

import jax
import numpy as np

from cnf_jax.experiments import config_lib
from cnf_jax.flows.flow import flow_from_config
from cnf_jax.training import loop, train
from cnf_jax.training.checkpoints import Checkpoints
from common import emit


def model_states(num: int, dim: int, blocks: int, hidden: int):
  """`num` TrainStates of the paper-size flow on the host, distinct initialisations."""
  config = config_lib.default_config()
  config.flow.num_blocks, config.flow.hidden = blocks, (hidden, hidden)
  model = flow_from_config(config.flow, dim)
  tx = train.make_optimizer(config.train)
  make = jax.jit(functools.partial(train.create_train_state, model, tx))
  rng = np.random.default_rng(0)
  # A trained model's Adam moments are dense numbers; fresh ones are zeros, which orbax's zstd
  # squeezes to nothing. Random values keep the bytes written those of a real round.
  dense = lambda x: (rng.normal(size=x.shape) * 1e-3).astype(x.dtype) if x.dtype == np.float32 else x
  states = [jax.device_get(make(jax.random.PRNGKey(i))) for i in range(num)]
  return [s.replace(opt_state=jax.tree.map(dense, s.opt_state)) for s in states]


def one_round(states, root: str, threads: int) -> float:
  ckpts = [Checkpoints(os.path.join(root, f"m{i}")) for i in range(len(states))]
  stop_ckpts = [Checkpoints(c.directory + ".validation") for c in ckpts]
  record = lambda variables: {"best": np.float32(1.0), "best_step": np.int32(10), "variables": variables}
  start = time.perf_counter()
  loop.save_checkpoints(ckpts, stop_ckpts, states.__getitem__, [record] * len(states), 10, threads=threads)
  seconds = time.perf_counter() - start
  for i in (0, len(states) - 1):   # what was written restores to what was saved
    restored = ckpts[i].restore(10, states[i])
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(states[i])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for c in ckpts + stop_ckpts:
    c.close()
  return seconds


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", type=int, default=30)
  parser.add_argument("--threads", default="1,8", help="comma-separated thread counts; the first is the baseline")
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--dim", type=int, default=128)
  parser.add_argument("--blocks", type=int, default=8)
  parser.add_argument("--hidden", type=int, default=512)
  parser.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
  args = parser.parse_args()
  threads = [int(t) for t in args.threads.split(",")]
  states = model_states(args.models, args.dim, args.blocks, args.hidden)
  megabytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves(states)) / 2**20
  times = {t: [] for t in threads}
  base = tempfile.mkdtemp(prefix="ckpt_bench_", dir=args.dir)
  try:
    for r in range(args.rounds):
      for t in threads:
        root = os.path.join(base, f"r{r}_t{t}")
        seconds = one_round(states, root, t)
        times[t].append(seconds)
        emit({"round": r, "threads": t, "models": args.models, "seconds": round(seconds, 3)})
        shutil.rmtree(root)
  finally:
    shutil.rmtree(base, ignore_errors=True)
  median = {t: statistics.median(v) for t, v in times.items()}
  emit({"summary": True, "models": args.models, "state_mb_all_models": round(megabytes, 1),
        "blocks": args.blocks, "hidden": args.hidden, "dim": args.dim, "cpus": os.cpu_count(),
        "backend": jax.default_backend(), "median_s": {str(t): round(s, 3) for t, s in median.items()},
        "speedup_vs_first": {str(t): round(median[threads[0]] / s, 2) for t, s in median.items()}})


if __name__ == "__main__":
  main()
