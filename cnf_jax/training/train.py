"""One train step of one flow: a TrainState pytree, the optimiser and a pure train_step.

  train_step(state, batch, rng) -> (state, metrics)

The loop that compiles, batches, logs and checkpoints it, for one model or many, is
`cnf_jax.training.loop`; what each model trains on is `cnf_jax.training.plan`.

`batch` is {"inlier": [B, D]} for maximum likelihood, plus "contrastive":
[B', D] for the contrastive and outlier-exposure objectives. Randomness
(training noise) comes from fold_in(rng, state.step), so a step's result depends
only on the state, the batch and the run's seed, and a resumed run repeats the
uninterrupted one.
"""
import json
import os
from typing import Any, Callable, Dict, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cnf_jax.data import preprocessing
from cnf_jax.errors import UserInputError
from cnf_jax.flows import Flow, init_flow
from cnf_jax.training import objectives
from cnf_jax.training.contrastive import permuted_batch
from cnf_jax.training.plan import Objective
from cnf_jax.files import atomic_write

Batch = Dict[str, jax.Array]
Metrics = Dict[str, jax.Array]
# fold_in tag of the column-permutation stream, apart from the noise keys split from the step key.
PERMUTE_STREAM = 0x7065726D


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training, as one pytree (what a checkpoint holds)."""
  step: jax.Array       # int32 scalar: number of updates done.
  params: Any           # trained flow parameters.
  constants: Any        # fixed permutations / rotations (never updated).
  opt_state: Any




def learning_rate_schedule(train_cfg: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up to train.lr, then cosine decay to 0 or constant."""
  # Keep at least one decay step: optax refuses a cosine schedule with decay_steps = 0.
  warmup = min(train_cfg.warmup_steps, train_cfg.steps - 1)
  if train_cfg.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, train_cfg.lr, warmup, train_cfg.steps, 0.0)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, train_cfg.lr, max(warmup, 1)), optax.constant_schedule(train_cfg.lr)],
      [warmup])


def make_optimizer(train_cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam with the schedule, after global-norm gradient clipping (if grad_clip > 0)."""
  adam = optax.adam(learning_rate_schedule(train_cfg))
  if train_cfg.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(train_cfg.grad_clip), adam)
  return adam


def create_train_state(model: Flow, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
  variables = init_flow(model, rng)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    constants=variables.get("constants", {}), opt_state=tx.init(params))


def start_state(model: Flow, tx: optax.GradientTransformation, rng: jax.Array,
                init_variables: Optional[Dict[str, Any]] = None) -> TrainState:
  """A fresh TrainState: initialised from `rng`, or (fine-tuning) from `init_variables`
  {"params", "constants"} of a trained flow with a fresh optimiser state."""
  if init_variables is None:
    return create_train_state(model, tx, rng)
  # A copy: the train step donates its state, which must not delete the trained model's arrays.
  params, constants = jax.tree.map(lambda a: jnp.array(a, copy=True),
                                   (init_variables["params"], init_variables["constants"]))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, constants=constants,
                    opt_state=tx.init(params))


def make_train_step(model: Flow, tx: optax.GradientTransformation, objective: Objective,
                    noise_std: float) -> Callable[[TrainState, Batch, jax.Array], Tuple[TrainState, Metrics]]:
  """Builds the pure update function for `objective`."""

  def loss_fn(params, constants, batch, rng):
    variables = {"params": params, "constants": constants}
    rng_in, rng_con = jax.random.split(rng)
    x_in = preprocessing.add_noise(rng_in, batch["inlier"], noise_std)
    if objective.kind == "nll":
      log_p_in = model.apply(variables, x_in, method=Flow.log_prob)
      return objectives.nll(log_p_in), {"nll_inlier": -jnp.mean(log_p_in)}
    x_con = preprocessing.add_noise(rng_con, batch["contrastive"], noise_std)
    # One pass over both batches: the same matmuls, half the kernel launches.
    log_p = model.apply(variables, jnp.concatenate([x_in, x_con]), method=Flow.log_prob)
    log_p_in, log_p_con = log_p[:x_in.shape[0]], log_p[x_in.shape[0]:]
    if objective.kind == "oe":
      n = min(x_in.shape[0], x_con.shape[0])
      loss = objectives.oe_loss(log_p_in, log_p_con, objective.margin, objective.weight)
      return loss, {"nll_inlier": -jnp.mean(log_p_in), "log_p_contrastive": jnp.mean(log_p_con),
                    "frac_margin_violated": jnp.mean(objective.margin + log_p_con[:n] - log_p_in[:n] > 0)}
    loss = objectives.contrastive_loss(log_p_in, log_p_con, objective.eps)
    return loss, {"nll_inlier": -jnp.mean(log_p_in), "log_p_contrastive": jnp.mean(log_p_con),
                  "frac_contrastive_above_eps": jnp.mean(log_p_con > objective.eps)}

  def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> Tuple[TrainState, Metrics]:
    step_rng = jax.random.fold_in(rng, state.step)
    if objective.permute:  # fresh column permutations each step, from (seed, step) as the noise
      batch = permuted_batch(jax.random.fold_in(step_rng, PERMUTE_STREAM), batch, objective.permute)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.constants, batch, step_rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def data_mesh(parallel: str, batch_sizes: Dict[str, int]) -> Mesh:
  """A 1-D 'data' mesh over the devices training uses; checks every batch splits evenly.

  parallel='data': all devices of all processes (jax.devices(); the local ones
  in a single-process run); 'single': the first local device.
  """
  devices = jax.devices() if parallel == "data" else jax.local_devices()[:1]
  for name, size in batch_sizes.items():
    if size % len(devices):
      raise UserInputError(f"{name} batch size {size} is not divisible by the {len(devices)} devices "
                           f"of data-parallel training; use a multiple of {len(devices)} or "
                           "train.parallel='single'")
  return Mesh(np.asarray(devices), ("data",))


def is_primary() -> bool:
  """True in the process that writes files (process 0; the only one without jax.distributed)."""
  return jax.process_index() == 0


def global_batch(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global jax.Array of the host batch x, each process filling only its own devices' rows.

  With one process this is device_put(x, sharding); with several (jax.distributed)
  every process computes the same batch indices, and each touches only its slice.
  """
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def replicate(tree: Any, sharding: NamedSharding) -> Any:
  """device_put(tree, sharding) for a replicated sharding, also when the mesh spans processes
  (device_put only reaches this process's devices; every process passes the same values)."""
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def one(x):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      data = np.asarray(jax.random.key_data(x))
      return jax.random.wrap_key_data(global_batch(data, sharding), impl=jax.random.key_impl(x))
    return global_batch(np.asarray(x), sharding)

  return jax.tree.map(one, tree)


def to_host(tree: Any) -> Any:
  """Replicated global arrays -> numpy when they span processes (other processes' devices cannot
  be read directly; each process holds a full copy). Unchanged in a single-process run."""
  return jax.device_get(tree) if jax.process_count() > 1 else tree


class MetricsWriter:
  """Appends one JSON object per line to `path` (readable by a notebook); only process 0 writes."""

  def __init__(self, path: str):
    self.path = path

  def drop_after(self, model: str, step: int) -> None:
    """Forgets lines of `model` past `step` (written after the checkpoint a resume starts from),
    repeated (model, step) lines and a torn last line (a write cut short), so a resumed run
    never holds duplicates."""
    if not is_primary() or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      raw = [l for l in f if l.strip()]
    kept, seen = [], set()
    for line in raw:
      try:
        record = json.loads(line)
      except ValueError:
        continue
      key = (record.get("model"), record.get("step"))
      if (record.get("model") == model and record.get("step", 0) > step) or key in seen:
        continue
      seen.add(key)
      kept.append(record)
    if len(kept) != len(raw):
      with atomic_write(self.path) as f:
        f.writelines(json.dumps(l) + "\n" for l in kept)

  def write(self, record: Dict[str, Any]) -> None:
    if not is_primary():
      return
    with open(self.path, "a") as f:
      end = f.tell()
      try:
        f.write(json.dumps(record) + "\n")
        f.flush()
      except OSError:
        f.truncate(end)   # no torn line (e.g. the disk filled up mid-write)
        raise
