"""The abort of issue 17, without cnf_jax: data-parallel steps on two CPU devices, queued unwaited.

  python benchmarks/results/soak/rendezvous_runahead.py --steps 200    # SIGABRT after ~60 s
  python benchmarks/results/soak/rendezvous_runahead.py --steps 100    # finishes in a second

Each step is a jitted gradient step whose batch is split over the two devices, so XLA inserts an
all-reduce: on the CPU an in-process rendezvous of the two devices' threads. The loop dispatches
--steps of them without waiting for any (JAX's asynchronous dispatch), as a training loop that only
looks at its loss every few hundred steps does. Past some depth (between 150 and 200 steps on the
busy 2-core machine, 2026-12-04) a rendezvous waits for a participant that never arrives; XLA logs
"This thread has been waiting ... may be stuck" after 20 s and, after 40 s more, LOG(FATAL)
"Termination timeout ... Exiting to ensure a consistent program state": abort(), exit -6, and with
faulthandler a stderr that ends in the list of extension modules. --wait_every k waits every k
steps (as cnf_jax's loop waits for every compiled chunk) and never aborts.
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
