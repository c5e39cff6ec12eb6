"""The abort of issue 17, without cnf_jax: data-parallel steps on two CPU devices, queued unwaited.

  python benchmarks/results/soak/rendezvous_runahead.py --steps 2000 --wait_every 50   # SIGABRT
  python benchmarks/results/soak/rendezvous_runahead.py --steps 2000 --wait_every 10   # finishes

Each step is a jitted gradient step whose batch is split over the two devices, so XLA inserts an
all-reduce: on the CPU an in-process rendezvous of the two devices' threads. The loop dispatches
steps without waiting for them (JAX's asynchronous dispatch), waiting only every --wait_every
steps (0: never), as a training loop that looks at its loss every so many steps does. When too
many are queued, a rendezvous waits for a participant that never arrives; XLA logs "This thread
has been waiting ... may be stuck" after 20 s and, after 40 s more, LOG(FATAL) "Termination
timeout ... Exiting to ensure a consistent program state": abort(), exit -6, and with
faulthandler a stderr that ends in the list of extension modules. On the busy 2-core machine
(2026-12-04, rendezvous_runahead_2026-12-04.jsonl) 2,000 steps waiting every 1 or 10 steps
finished 4 of 4 and waiting every 50 or never aborted 4 of 4; the depth at which it deadlocks
varies with timing (without waiting, 150 steps once finished and 200 once aborted).
"""
import argparse
import json
import os
import time


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--width", type=int, default=16, help="features of the toy regression")
  parser.add_argument("--wait_every", type=int, default=0, help="wait for the result every k steps (0: never)")
  args = parser.parse_args()
  os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"   # before jax starts its backend
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax
  import jax.numpy as jnp
  from jax.sharding import Mesh, NamedSharding, PartitionSpec

  mesh = Mesh(jax.devices(), ("data",))
  replicated, split = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))

  @jax.jit
  def step(w, x):   # w [D, D] replicated, x [512, D] split over the devices: the mean is an all-reduce
    return w - 0.1 * jax.grad(lambda w: jnp.mean(jnp.tanh(x @ w) ** 2))(w)

  w = jax.device_put(jnp.eye(args.width) * 0.5, replicated)
  x = jax.device_put(jnp.ones((512, args.width)) / 4, split)
  start = time.perf_counter()
  for i in range(args.steps):
    w = step(w, x)
    if args.wait_every and (i + 1) % args.wait_every == 0:
      w.block_until_ready()
  print(json.dumps({"steps": args.steps, "wait_every": args.wait_every, "w00": float(w[0, 0]),
                    "seconds": round(time.perf_counter() - start, 2)}))


if __name__ == "__main__":
  main()
