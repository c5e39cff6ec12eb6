"""Training one flow: a TrainState pytree, a pure train_step, compiled once, checkpointed.

  train_step(state, batch, rng) -> (state, metrics)

`batch` is {"inlier": [B, D]} for maximum likelihood, plus "contrastive":
[B', D] for the contrastive and outlier-exposure objectives. Randomness
(training noise) comes from fold_in(rng, state.step), so a step's result depends
only on the state, the batch and the run's seed, and a resumed run repeats the
uninterrupted one.
"""
import dataclasses
import json
import logging

import os
import time
from typing import Any, Callable, Dict, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cnf_jax.training import objectives
from cnf_jax.data import preprocessing
from cnf_jax.training.checkpoints import Checkpoints
from cnf_jax.training.contrastive import permuted_batch
from cnf_jax.data.mixture import make_sampler
from cnf_jax.errors import NonFiniteLossError, UserInputError
from cnf_jax.flows import Flow, init_flow

logger = logging.getLogger(__name__)

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


@dataclasses.dataclass(frozen=True)
class Objective:
  """'nll' (maximum likelihood on the inlier batch), 'contrastive' (eq. 3 with clamp eps) or
  'oe' (outlier exposure: NLL + weight * margin ranking loss against the contrastive batch).

  permute: '' or a `contrastive.PERMUTE_MODES` entry: the step permutes the columns
  of the inlier batch to make the contrastive batch ('contrastive') or the batch
  the flow is fitted to ('inlier'); the batch then holds only "inlier".
  """
  kind: str
  eps: float = 0.0
  permute: str = ""
  margin: float = 0.0   # oe only.
  weight: float = 1.0   # oe only.


# Objectives whose batches hold a "contrastive" part.
CONTRASTIVE_KINDS = ("contrastive", "oe")


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


@dataclasses.dataclass
class CompiledStep:
  """A jitted train step with the shardings its inputs must have."""
  fn: Callable
  replicated: NamedSharding
  batch: NamedSharding
  num_devices: int


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


def compile_train_step(train_step: Callable, parallel: str, batch_sizes: Dict[str, int]) -> CompiledStep:
  """jit(train_step) with donated state; with parallel='data' the batch is split over all devices.

  Data parallelism is GSPMD (a sharded jit over a 1-D 'data' mesh), not pmap:
  the step is the same program as on one device, XLA inserts the gradient
  all-reduce, and partitionable threefry makes the training noise identical
  whatever the number of devices. The mesh spans the devices of every process
  (jax.distributed), so the same code is multi-host data parallelism.
  """
  mesh = data_mesh(parallel, batch_sizes)
  replicated = NamedSharding(mesh, PartitionSpec())
  batch = NamedSharding(mesh, PartitionSpec("data"))
  fn = jax.jit(train_step, in_shardings=(replicated, batch, replicated),
               out_shardings=(replicated, replicated), donate_argnums=0)
  return CompiledStep(fn, replicated, batch, mesh.size)


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
    """Forgets lines of `model` past `step` (written after the checkpoint a resume starts from)."""
    if not is_primary() or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = [json.loads(l) for l in f if l.strip()]
    kept = [l for l in lines if not (l.get("model") == model and l.get("step", 0) > step)]
    if len(kept) != len(lines):
      with open(self.path + ".tmp", "w") as f:
        f.writelines(json.dumps(l) + "\n" for l in kept)
      os.replace(self.path + ".tmp", self.path)

  def write(self, record: Dict[str, Any]) -> None:
    if not is_primary():
      return
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")


def _check_finite(name: str, pending, ckpts: Checkpoints) -> None:
  for step, metrics in pending:
    loss = float(metrics["loss"])
    if not np.isfinite(loss):
      last = ckpts.latest_step()
      where = f"step {last} in {ckpts.directory}" if last else "none (no checkpoint was written yet)"
      raise NonFiniteLossError(
          f"model {name!r}: loss is {loss} at step {step}; stopped. Last good checkpoint: {where}. "
          "Lower train.lr, raise preprocess.noise_std, or check the data.")


def fit_flow(name: str, model: Flow, config: ml_collections.ConfigDict, inliers: np.ndarray,
             contrastive: Optional[np.ndarray], objective: Objective, workdir: str, seed: int,
             writer: MetricsWriter, mixtures: Optional[Dict[str, Any]] = None,
             init_variables: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
  """Trains (or resumes, or just restores) one flow; returns its variables {"params", "constants"}.

  Args:
    name: model name; its checkpoints live in <workdir>/checkpoints/<name>.
    inliers: preprocessed training data [N, D] (noise is added in the step).
    contrastive: preprocessed contrastive data [M, D], needed for the contrastive objective.
    seed: seeds initialisation, batch order and noise of this model.
    mixtures: {"inlier" | "contrastive": mixture.Mixture} for a set that is a mixture of
      sources: its batches come from a MixtureSampler instead of an EpochSampler.
    init_variables: start from these {"params", "constants"} (fine-tuning, e.g. oe) instead
      of a random initialisation; the optimiser state starts fresh either way.
  """
  tc = config.train
  if tc.parallel == "single" and jax.process_count() > 1:
    raise UserInputError(f"train.parallel='single' in a run of {jax.process_count()} processes; "
                         "use train.parallel='data' (multi-host data parallelism) or run one process")
  tx = make_optimizer(tc)
  sizes = {"inlier": tc.batch_size}
  if objective.kind in CONTRASTIVE_KINDS and objective.permute != "contrastive":
    if contrastive is None:
      raise UserInputError(f"model {name!r} uses the {objective.kind} objective but there is no contrastive data")
    sizes["contrastive"] = tc.contrastive_batch_size
  step_fn = compile_train_step(make_train_step(model, tx, objective, config.preprocess.noise_std),
                               tc.parallel, sizes)

  rng = jax.random.key(seed)
  init_rng, step_rng = jax.random.split(rng)
  state = replicate(start_state(model, tx, init_rng, init_variables), step_fn.replicated)
  step_rng = replicate(step_rng, step_fn.replicated)
  ckpts = Checkpoints(os.path.join(workdir, "checkpoints", name), keep=tc.keep_checkpoints)
  start = ckpts.latest_step() or 0
  if start:
    state = ckpts.restore(start, state)
    logger.info("model %s: resumed from step %d", name, start)
  # Lines past the restored step (or all of them, when the first checkpoint never completed)
  # came from an interrupted attempt and are written again below.
  writer.drop_after(name, start)

  mixtures = mixtures or {}
  samplers = {"inlier": make_sampler(len(inliers), tc.batch_size, seed, mixtures.get("inlier"))}
  arrays = {"inlier": inliers}
  if "contrastive" in sizes:
    samplers["contrastive"] = make_sampler(len(contrastive), tc.contrastive_batch_size, seed + 1,
                                           mixtures.get("contrastive"))
    arrays["contrastive"] = contrastive

  pending = []
  tick, tick_step = time.perf_counter(), start
  for step in range(start, tc.steps):
    # Every process draws the same global batch indices; global_batch gathers only its rows.
    batch = {k: global_batch(_LazyRows(arrays[k], samplers[k].indices(step)), step_fn.batch) for k in arrays}
    state, metrics = step_fn.fn(state, batch, step_rng)
    done = step + 1
    pending.append((done, metrics))
    save = done % tc.checkpoint_every == 0 or done == tc.steps
    if save or done % tc.log_every == 0:
      pending = jax.device_get(pending)
      _check_finite(name, pending, ckpts)
      now = time.perf_counter()
      record = {k: float(np.mean([m[k] for _, m in pending])) for k in pending[-1][1]}
      record.update(model=name, step=done, steps_per_s=(done - tick_step) / (now - tick))
      writer.write(record)
      logger.info("model %s step %d: %s", name, done,
                   ", ".join(f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float)))
      pending, tick, tick_step = [], now, done
    if save:
      ckpts.save(done, state)
  ckpts.close()
  return to_host({"params": state.params, "constants": state.constants})


class _LazyRows:
  """data[rows] gathered on indexing: global_batch asks each process only for its slice."""

  def __init__(self, data: np.ndarray, rows: np.ndarray):
    self.data, self.rows = data, rows
    self.shape = (len(rows),) + data.shape[1:]

  def __getitem__(self, index):
    return self.data[self.rows[index[0]]][(slice(None),) + tuple(index[1:])]
