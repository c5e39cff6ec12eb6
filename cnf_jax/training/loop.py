"""The one training loop: N >= 1 flows of one architecture and objective as one compiled program.

  fitted = fit_models(model, train_cfg, noise_std, jobs)      # jobs: one `Job` per model

Every caller trains through here: a CLI run (N = 1 per model), a vmapped sweep (N runs
that share the flow, optimiser and objective kind) and `ContrastiveFlowDetector.fit`.

The compiled program is `jax.vmap` over models of a `lax.scan` over a chunk of L steps
of `train.make_train_step`. Chunks end at every log step, every checkpoint step and at
the last step, so a run resumed from a checkpoint replays the same chunks as the
uninterrupted run and ends bit-identical. Batches [N, L, B, D] are gathered on the host
from each model's sampler, which depends only on (seed, step); the randomness inside a
step (noise, column permutations) comes from fold_in(key, step). Hence model i of a sweep
sees exactly what its own run would see.

Per chunk there is one device round trip: the metrics come back, the loss is checked
for non-finite values (one check for all callers), records are logged and, at
checkpoint steps, each model's TrainState is saved with orbax.

Early stopping (train.validation_fraction > 0): at every eval step each model's own
objective is computed on its held-out rows (`plan.ModelInputs.val_x`, noise-free); the
best parameters are kept, and with train.patience > 0 a model that has not improved for
that many evaluations stops. A stopped model of a vmapped program is masked (its state
no longer changes; the program keeps its shape) and the loop ends when all have stopped.
The bookkeeping and the best parameters are checkpointed beside each TrainState
(<checkpoint_dir>.validation), so a resumed run stops where the uninterrupted one does.
"""
import concurrent.futures
import dataclasses
import functools
import hashlib
import logging
import os
import shutil
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from cnf_jax.data.mixture import make_sampler
from cnf_jax.errors import NonFiniteLossError, UserInputError
from cnf_jax.flows import Flow
from cnf_jax.training import objectives
from cnf_jax.training import plan
from cnf_jax.training import preemption
from cnf_jax.training.checkpoints import Checkpoints, check_finite, check_shapes
from cnf_jax.training.progress import Progress
from cnf_jax.training.summaries import MetricsWriter
from cnf_jax.training.train import (data_mesh, global_batch, is_primary, learning_rate_schedule, make_optimizer,
                                    make_train_step, replicate, start_state, to_host)

logger = logging.getLogger(__name__)

# Host bytes of one chunk's batches [N, L, B, D] (float32) at most: long chunks hide dispatch,
# but a sweep of many models must not gather gigabytes per chunk.
CHUNK_BYTES = 64 << 20
# Optimiser settings that shape the compiled step (train_cfg keys).
OPTIMIZER_KEYS = ("lr", "warmup_steps", "schedule", "grad_clip")
# The parts of the loop whose wall seconds each log record carries (shared by a program's models),
# summed since the previous record. A checkpoint is written after the record of its step (so that
# a resume never lacks a line), hence its seconds arrive with the next record.
SPENT_PARTS = ("host_batches_s", "device_s", "validation_s", "checkpoint_s")
DEFAULT_HINT = "Lower train.lr, raise preprocess.noise_std, or check the data."


@dataclasses.dataclass
class Job:
  """One model to train.

  inputs: what it trains on (plan.ModelInputs: x [N, D], contrastive [M, D] or None,
    Objective, mixtures).
  seed: its model seed (plan.model_seed): key(seed) splits into the init key and the
    step key; its batch streams are plan.batch_seed(seed, part).
  init_variables: start from these {"params", "constants"} (fine-tuning) instead of a
    random initialisation; the optimiser state starts fresh either way.
  checkpoint_dir: orbax checkpoints to resume from and save to, or None (no checkpoints).
  writer: where log records go (MetricsWriter), or None.
  label: names the model in messages, e.g. "model 'cf'" or "model 'cf' of run /tmp/x".
  noise_std: this model's training noise, or None: fit_models' noise_std. Models of one
    program may differ in it (the detector trains its noise candidates together).
  """
  inputs: plan.ModelInputs
  seed: int
  init_variables: Optional[Dict[str, Any]] = None
  checkpoint_dir: Optional[str] = None
  writer: Optional[MetricsWriter] = None
  label: str = "model"
  noise_std: Optional[float] = None


@dataclasses.dataclass
class Fitted:
  """A trained model: variables {"params", "constants"} (host arrays; the best ones under early
  stopping), the per-step losses [steps trained in this call] and the step it resumed from
  (0 for a fresh start); with validation rows, `validation` = {"best_step", "best_val_loss",
  "stopped_at" (None if it ran all steps), "val_loss" {step: value} of this call}."""
  variables: Dict[str, Any]
  losses: np.ndarray
  start_step: int
  validation: Optional[Dict[str, Any]] = None


@dataclasses.dataclass
class _Stopping:
  """Early-stopping bookkeeping of one model (what `<checkpoint_dir>.validation` holds)."""
  best: float = float("inf")
  best_step: int = 0
  bad: int = 0            # evaluations since the last improvement
  stopped_at: int = -1    # -1: still training
  best_variables: Any = None

  def saved(self, like_variables) -> Dict[str, Any]:
    variables = self.best_variables if self.best_variables is not None else like_variables
    # float32 / int32: what a checkpoint restores with jax's default (32-bit) types, so a resumed
    # run compares against exactly the value the uninterrupted one holds.
    # (0-d arrays: orbax saves arrays, not numpy scalars.)
    return {"best": np.asarray(self.best, np.float32), "best_step": np.asarray(self.best_step, np.int32),
            "bad": np.asarray(self.bad, np.int32), "stopped_at": np.asarray(self.stopped_at, np.int32),
            "variables": variables}

  @classmethod
  def from_saved(cls, saved: Dict[str, Any]) -> "_Stopping":
    best = float(saved["best"])
    return cls(best, int(saved["best_step"]), int(saved["bad"]), int(saved["stopped_at"]),
               jax.device_get(saved["variables"]) if np.isfinite(best) else None)


def chunk_bounds(start: int, steps: int, log_every: int, checkpoint_every: int, max_len: int,
                 eval_every: int = 0) -> List[Tuple[int, int]]:
  """[(a, b)]: the chunks of steps [a, b) from `start` to `steps`.

  A chunk ends at the next multiple of log_every, checkpoint_every or eval_every (0 =
  never), at `steps`, or after max_len steps. The bounds depend only on where they
  start, so a resume from a checkpoint step replays the chunks of the uninterrupted run.
  """
  bounds, a = [], start
  while a < steps:
    ends = [steps, a + max_len]
    for every in (log_every, checkpoint_every, eval_every):
      if every > 0:
        ends.append((a // every + 1) * every)
    b = min(ends)
    bounds.append((a, b))
    a = b
  return bounds


def batch_sizes(train_cfg: ml_collections.ConfigDict, objective: plan.Objective) -> Dict[str, int]:
  """{batch part: rows per step}: 'inlier', plus 'contrastive' when the step reads given contrastive rows."""
  sizes = {"inlier": int(train_cfg.batch_size)}
  if objective.kind in ("contrastive", "oe") and objective.permute != "contrastive":
    sizes["contrastive"] = int(train_cfg.contrastive_batch_size)
  return sizes


@functools.lru_cache(maxsize=64)
def _compiled_chunk(model: Flow, optimizer: Tuple, kind: str, permute: str, margin: float, weight: float,
                    noise_std: Optional[float], parallel: str, sizes: Tuple):
  """(chunk_fn, tx, replicated sharding, batch sharding), cached so refits do not recompile.

  chunk_fn(states [N, ...], batches {part: [N, L, B, D]}, step_rngs [N], eps [N], noise [N],
    active [N]) -> (states, metrics {name: [N, L]}).
  The clamp eps is traced (models with different eps share the program); so is the noise
  when noise_std is None (otherwise the noise is the constant noise_std, as every run of a
  sweep shares it, and the argument is unused). The batch is split over the 'data' mesh
  axis (axis 2) with parallel='data'. A model with active False keeps its state
  (early-stopped); its metrics are computed but meaningless.
  """
  tx = make_optimizer(ml_collections.ConfigDict(dict(optimizer)))

  def one_model(state, batches, rng, eps, noise, active):
    step = make_train_step(model, tx, plan.Objective(kind, eps, permute, margin, weight),
                           noise if noise_std is None else noise_std)
    new, metrics = jax.lax.scan(lambda s, batch: step(s, batch, rng), state, batches)
    return jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state), metrics

  mesh = data_mesh(parallel, dict(sizes))
  replicated = NamedSharding(mesh, PartitionSpec())
  batch = NamedSharding(mesh, PartitionSpec(None, None, "data"))
  fn = jax.jit(jax.vmap(one_model), in_shardings=(replicated, batch, replicated, replicated, replicated, replicated),
               out_shardings=(replicated, replicated), donate_argnums=0)
  return fn, tx, replicated, batch


@functools.lru_cache(maxsize=64)
def _compiled_criterion(model: Flow, kind: str, margin: float, weight: float):
  """jit(criterion)(variables, x_val [V, D], contrastive_val [W, D] or None, eps) -> scalar: the
  model's own objective on held-out rows, without training noise (lower is better)."""

  def criterion(variables, x, contrastive, eps):
    log_p = lambda rows: model.apply(variables, rows, method=Flow.log_prob)
    log_p_in = log_p(x)
    if kind == "nll":
      return objectives.nll(log_p_in)
    if kind == "oe":
      return objectives.oe_loss(log_p_in, log_p(contrastive), margin, weight)
    return objectives.contrastive_loss(log_p_in, log_p(contrastive), eps)

  return jax.jit(criterion)


class _LazyBatches:
  """arrays[n][rows[n, l, b]] as an [N, L, B, D] array gathered on indexing, so that with
  several processes each gathers only the rows of its own devices (global_batch)."""

  def __init__(self, arrays: Sequence[np.ndarray], rows: np.ndarray):
    self.arrays, self.rows = arrays, rows
    self.shape = rows.shape + arrays[0].shape[1:]

  def __getitem__(self, index):
    n_index, l_index, b_index = index[:3]
    picked = [self.arrays[n][self.rows[n, l_index, b_index]] for n in range(len(self.arrays))[n_index]]
    return np.stack(picked)[(slice(None),) * 3 + tuple(index[3:])]


def _stack(trees: Sequence[Any]) -> Any:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


@jax.jit
def _take(tree: Any, i) -> Any:
  return jax.tree.map(lambda x: x[i], tree)


def _unstack(tree: Any, i: int) -> Any:
  """Model i of a stacked tree: one compiled gather (a Python loop over the leaves costs one
  dispatch per leaf, for every model at every evaluation and checkpoint)."""
  return _take(tree, i)


# Threads that write one checkpoint round. Each model's save is a separate orbax write that spends
# most of its time in serialisation and file I/O outside the GIL; one after another, a round of
# 30 paper-size models took 16.4 s on the H200 machine (benchmarks/checkpoint_throughput.py
# measures serial against threaded rounds).
SAVE_THREADS = 4


def save_checkpoints(ckpts: Sequence[Optional[Checkpoints]], stop_ckpts: Sequence[Optional[Checkpoints]],
                     state_of: Callable[[int], Any], stopping_saved: Sequence[Callable[[Any], Any]], step: int,
                     threads: int = SAVE_THREADS) -> None:
  """Saves model i's TrainState state_of(i) in ckpts[i] and, first, its early-stopping record
  stopping_saved[i](variables) in stop_ckpts[i], every model in parallel (up to `threads`; each
  thread takes its model out of the stacked state, so at most `threads` copies exist at once).

  Each save is atomic (orbax writes a temporary directory and renames it), so a kill mid-round
  leaves some models one step behind, which a resume handles (_common_start). Every save is
  waited for before the first error (in model order) is raised: nothing is still being written
  when the error reaches the caller."""
  def save(i):
    model_state = state_of(i)
    if stop_ckpts[i] is not None:
      stop_ckpts[i].save(step, stopping_saved[i](_variables(model_state)))
    ckpts[i].save(step, model_state)

  todo = [i for i, ckpt in enumerate(ckpts) if ckpt is not None]
  if threads <= 1 or len(todo) <= 1:
    for i in todo:
      save(i)
    return
  with concurrent.futures.ThreadPoolExecutor(max_workers=min(threads, len(todo))) as pool:
    futures = [pool.submit(save, i) for i in todo]
    concurrent.futures.wait(futures)
  for future in futures:
    future.result()   # the first failure, in model order


def _common_start(ckpts: Sequence[Optional[Checkpoints]]) -> int:
  """The step all models resume from: the oldest latest step (a kill between the N saves of
  one step leaves some models one checkpoint behind; the older one is still kept)."""
  if any(c is None for c in ckpts):
    return 0
  start = min(c.latest_step() or 0 for c in ckpts)
  if start:
    missing = [c.directory for c in ckpts if start not in c.all_steps()]
    if missing:
      raise UserInputError(
          f"cannot resume: checkpoint step {start} is missing in {', '.join(missing)} "
          "(runs at different steps, e.g. trained separately); finish them separately or delete their checkpoints")
  return start


def _stopping_problem(restored: Any, like: Any) -> Optional[str]:
  """`Checkpoints.restore_newest`'s check for an early-stopping state: its best value may be
  inf (no evaluation yet), its variables must be finite."""
  return check_shapes(restored, like) or check_finite(restored["variables"])


def _restore_common(ckpts: Sequence[Optional[Checkpoints]], stop_ckpts: Sequence[Optional[Checkpoints]],
                    states: List[Any], jobs: Sequence[Job], start: int
                    ) -> Tuple[int, List[Any], List[Optional[Dict[str, Any]]]]:
  """(step, states, saved stopping states): every model (and its early-stopping state, when
  it has a checkpoint of its own) restored at the newest step <= start that all of them can
  restore; a damaged step is moved aside and an older one tried (Checkpoints.restore_newest).
  (0, states, [None, ...]) to train from scratch when no common step restores. Steps newer
  than the one returned are deleted, so that every model's checkpoints are the steps this
  attempt writes (orbax silently skips saving a step that is not newer than its latest)."""
  saved: List[Optional[Dict[str, Any]]] = [None] * len(jobs)
  restored = [(0, s) for s in states]
  while start:
    restored = [c.restore_newest(s, start, job.label) for c, s, job in zip(ckpts, states, jobs)]
    saved_steps = []
    for i, (sc, (_, st), job) in enumerate(zip(stop_ckpts, restored, jobs)):
      if sc is None:
        continue
      step, saved[i] = sc.restore_newest(_Stopping().saved(_variables(st)), start, f"{job.label} (validation)",
                                         check=_stopping_problem)
      saved_steps.append(step)
    steps = {step for step, _ in restored} | set(saved_steps)
    if steps == {start}:
      break
    start = min(steps)
  for c in list(ckpts) + list(stop_ckpts):
    if c is not None:
      c.delete_after(start)
  if not start:
    return 0, states, [None] * len(jobs)
  return start, [st for _, st in restored], saved


def _close(ckpts: Sequence[Optional[Checkpoints]]) -> None:
  for ckpt in ckpts:
    if ckpt is not None:
      ckpt.close()


def _check_finite(jobs: Sequence[Job], ckpts, losses: np.ndarray, first_step: int, hint: str,
                  active: np.ndarray) -> None:
  """NonFiniteLossError for the first active model whose chunk losses [N, L] hold inf or NaN."""
  for job, ckpt, row, on in zip(jobs, ckpts, losses, active):
    bad = np.flatnonzero(~np.isfinite(row)) if on else []
    if len(bad):
      last = ckpt.latest_step() if ckpt is not None else None
      where = (f"step {last} in {ckpt.directory}" if last else "none (no checkpoint was written yet)"
               ) if ckpt is not None else "none (this fit writes no checkpoints)"
      also = " (the whole sweep)" if len(jobs) > 1 else ""
      raise NonFiniteLossError(f"{job.label}: loss is {row[bad[0]]} at step {first_step + int(bad[0]) + 1}; "
                               f"stopped{also}. Last good checkpoint: {where}. {hint}")


def job_key(job: Job, noise_std: Optional[float] = None) -> bytes:
  """A digest of everything a job's training depends on besides the shared program: its seed,
  objective (eps included), mixtures, training noise, training and held-out rows and starting
  variables. Jobs with the same key train the same model (e.g. Flow-ratio's contrastive flow,
  fitted to the same Tiny ImageNet rows with the same seed in every class of a sweep).

  noise_std: fit_models' noise, which a job without its own (job.noise_std None) trains with:
  the key holds the noise a job actually gets, so None and an equal explicit noise match."""
  inputs = job.inputs
  noise = job.noise_std if job.noise_std is not None else noise_std
  digest = hashlib.sha256(repr((job.seed, inputs.objective, sorted(inputs.mixtures.items()),
                                None if noise is None else float(noise))).encode())
  arrays = [inputs.x, inputs.contrastive, inputs.val_x, inputs.val_contrastive]
  arrays += jax.tree.leaves(job.init_variables) if job.init_variables is not None else []
  for a in arrays:
    if a is None:
      digest.update(b"none")
      continue
    a = np.ascontiguousarray(np.asarray(a))
    digest.update(f"{a.shape}{a.dtype}".encode())
    digest.update(a.tobytes())
  return digest.digest()


class _WriterTee:
  """The log writers of identical jobs behind one job's writer: every run keeps its own records."""

  def __init__(self, writers: Sequence[MetricsWriter]):
    self.writers = list(writers)

  @property
  def primary(self) -> bool:
    return self.writers[0].primary

  def write(self, record: Dict[str, Any]) -> None:
    for w in self.writers:
      w.write(dict(record))

  def drop_after(self, model: str, step: int) -> None:
    for w in self.writers:
      w.drop_after(model, step)

  def close(self) -> None:
    for w in self.writers:
      w.close()


def _copy_checkpoints(source: str, target: str) -> None:
  """Replaces the checkpoints of `target` (and its .validation) with copies of `source`'s: each
  run directory keeps the checkpoints of its own models (for resuming and the score CLI). Copied
  to a temporary name and renamed, so a kill leaves either the old or the new directory."""
  for suffix in ("", ".validation"):
    src, dst = source + suffix, target + suffix
    if not os.path.isdir(src):
      continue
    tmp = dst + ".copying"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)


def fit_models(model: Flow, train_cfg: ml_collections.ConfigDict, noise_std: float, jobs: Sequence[Job],
               steps: Optional[int] = None, name: str = "model", hint: str = DEFAULT_HINT,
               progress: bool = True) -> List[Fitted]:
  """Trains (or resumes, or just restores) N models of `model`; returns one Fitted per job.

  Identical jobs (`job_key`) are trained once: the first of them trains, logging to every
  one's writer, and the others get its Fitted and a copy of its checkpoints."""
  jobs = list(jobs)
  if len(jobs) <= 1:   # nothing to share: no need to hash the rows (tens of MB per job)
    return _fit_distinct(model, train_cfg, noise_std, jobs, steps, name, hint, progress)
  first_of: Dict[bytes, int] = {}
  owner = [first_of.setdefault(job_key(job, noise_std), i) for i, job in enumerate(jobs)]
  unique = sorted(set(owner))
  if len(unique) == len(jobs):
    return _fit_distinct(model, train_cfg, noise_std, jobs, steps, name, hint, progress)
  logger.info("model %s: %d runs, %d distinct models to train (the others are identical copies)", name,
              len(jobs), len(unique))
  trained = []
  for u in unique:
    writers = [jobs[i].writer for i in range(len(jobs)) if owner[i] == u and jobs[i].writer is not None]
    trained.append(dataclasses.replace(jobs[u], writer=_WriterTee(writers) if len(writers) > 1 else jobs[u].writer))
  fitted = dict(zip(unique, _fit_distinct(model, train_cfg, noise_std, trained, steps, name, hint, progress)))
  for i, job in enumerate(jobs):
    if owner[i] != i and job.checkpoint_dir and jobs[owner[i]].checkpoint_dir:
      _copy_checkpoints(jobs[owner[i]].checkpoint_dir, job.checkpoint_dir)
  return [fitted[owner[i]] for i in range(len(jobs))]


def _fit_distinct(model: Flow, train_cfg: ml_collections.ConfigDict, noise_std: float, jobs: Sequence[Job],
                  steps: Optional[int], name: str, hint: str, progress: bool) -> List[Fitted]:
  """fit_models for jobs that are not identical.

  Args:
    model: the flow architecture all jobs share.
    train_cfg: a config's `train` section (batch sizes, optimiser, log / checkpoint
      intervals, parallel).
    noise_std: Gaussian noise added to every training batch.
    jobs: the models; they share the objective kind, permutation and oe margin/weight
      (eps may differ).
    steps: updates per model (default train_cfg.steps).
    name: the model name in log records and log lines.
    hint: what the non-finite-loss error suggests.
    progress: show a progress bar (`training.progress`; silenced by its set_quiet).
  """
  tc = train_cfg
  steps = int(tc.steps if steps is None else steps)
  if not jobs:
    return []
  first = jobs[0].inputs.objective
  shared = lambda o: (o.kind, o.permute, float(o.margin), float(o.weight))
  if any(shared(j.inputs.objective) != shared(first) for j in jobs):
    raise ValueError(f"model {name!r}: models of one program need the same objective kind, permutation, "
                     "margin and weight")
  if tc.parallel == "single" and jax.process_count() > 1:
    raise UserInputError(f"train.parallel='single' in a run of {jax.process_count()} processes; "
                         "use train.parallel='data' (multi-host data parallelism) or run one process")
  sizes = batch_sizes(tc, first)
  for job in jobs:
    if "contrastive" in sizes and job.inputs.contrastive is None:
      raise UserInputError(f"{job.label} uses the {first.kind} objective but there is no contrastive data")
  optimizer = (("steps", steps),) + tuple((k, tc[k]) for k in OPTIMIZER_KEYS)
  noises = [float(noise_std if job.noise_std is None else job.noise_std) for job in jobs]
  # One noise for all (every CLI run and sweep): a compile-time constant, as it always was.
  # Several (the detector's noise candidates): traced per model, one program for all.
  static_noise = noises[0] if len(set(noises)) == 1 else None
  chunk_fn, tx, replicated, batch_sharding = _compiled_chunk(
      model, optimizer, first.kind, first.permute, float(first.margin), float(first.weight), static_noise,
      tc.parallel, tuple(sorted(sizes.items())))

  keys = [jax.random.split(jax.random.key(job.seed)) for job in jobs]
  states = [start_state(model, tx, k[0], job.init_variables) for k, job in zip(keys, jobs)]
  step_rngs = replicate(jnp.stack([k[1] for k in keys]), replicated)
  eps = replicate(jnp.asarray([job.inputs.objective.eps for job in jobs], jnp.float32), replicated)
  noise = replicate(jnp.asarray(noises, jnp.float32), replicated)
  ckpts = [Checkpoints(job.checkpoint_dir, keep=tc.keep_checkpoints) if job.checkpoint_dir else None
           for job in jobs]
  validate = any(j.inputs.val_x is not None for j in jobs)
  if validate and not all(j.inputs.val_x is not None for j in jobs):
    raise ValueError(f"model {name!r}: either every model of one program has validation rows or none")
  eval_every = (int(tc.get("eval_every", 0)) or tc.log_every) if validate else 0
  patience = int(tc.get("patience", 0)) if validate else 0
  # The early-stopping state lives in its own checkpoints beside each model's, saved at the same steps.
  stop_ckpts = [Checkpoints(c.directory + ".validation", keep=tc.keep_checkpoints) if c and validate else None
                for c in ckpts]
  start, states, saved = _restore_common(ckpts, stop_ckpts, states, jobs,
                                         _common_start(ckpts + [c for c in stop_ckpts if c is not None]))
  stopping = [_Stopping.from_saved(sv) if sv is not None else _Stopping() for sv in saved]
  if start:
    logger.info("model %s%s: resumed from step %d", name, f" of {len(jobs)} runs" if len(jobs) > 1 else "", start)
  if preemption.requested() and start < steps:   # SIGTERM before this model started: nothing new to save
    _close(ckpts + stop_ckpts)
    raise preemption.Preempted(f"model {name}: stopped by SIGTERM at step {start} of {steps}; "
                               "rerun the same command to resume")
  for job in jobs:
    if job.writer is not None:
      # Lines past the restored step (or all of them, when the first checkpoint never completed)
      # came from an interrupted attempt and are written again below.
      job.writer.drop_after(name, start)
  state = replicate(_stack(states), replicated)

  arrays = {"inlier": [j.inputs.x for j in jobs]}
  if "contrastive" in sizes:
    arrays["contrastive"] = [j.inputs.contrastive for j in jobs]
  samplers = {part: [make_sampler(len(a), sizes[part], plan.batch_seed(j.seed, part), j.inputs.mixtures.get(part))
                     for a, j in zip(arrays[part], jobs)] for part in arrays}
  dim = jobs[0].inputs.x.shape[1]
  max_len = max(1, CHUNK_BYTES // (len(jobs) * sum(sizes.values()) * dim * 4))

  criterion = _compiled_criterion(model, first.kind, float(first.margin), float(first.weight)) if validate else None
  val_history: List[Dict[int, float]] = [{} for _ in jobs]
  active = np.array([st.stopped_at < 0 for st in stopping])
  losses: List[List[np.ndarray]] = [[] for _ in jobs]
  pending: List[Dict[str, np.ndarray]] = []   # metrics {name: [N, L]} since the last log record
  tick, tick_step = time.perf_counter(), start
  # Wall seconds per part of the loop since the last log record (written with it): where a
  # slow run spends its time (gathering batches on the host, the compiled chunk, validation,
  # checkpoints).
  spent = dict.fromkeys(SPENT_PARTS, 0.0)
  schedule = learning_rate_schedule(ml_collections.ConfigDict(dict(optimizer)))
  desc = f"{name}" + (f" x{len(jobs)} runs" if len(jobs) > 1 else "")
  bar = Progress(steps, desc, start=start) if progress and is_primary() else None
  try:
    for a, b in chunk_bounds(start, steps, tc.log_every, tc.checkpoint_every if any(ckpts) else 0, max_len,
                             eval_every):
      if not active.any():
        break   # every model has stopped early (a resumed run whose models all stopped)
      t0 = time.perf_counter()
      rows = {part: np.stack([np.stack([s.indices(t) for t in range(a, b)]) for s in samplers[part]])
              for part in samplers}   # [N, L, B]: model i's batches of its own run
      batches = {part: global_batch(_LazyBatches(arrays[part], rows[part]), batch_sharding) for part in rows}
      was_active = active.copy()
      t1 = time.perf_counter()
      state, metrics = chunk_fn(state, batches, step_rngs, eps, noise, replicate(jnp.asarray(active), replicated))
      # Waiting here for every chunk also keeps the host from queueing programs ahead of the
      # devices: with several CPU devices, tens to hundreds of queued data-parallel steps
      # deadlock XLA's in-process all-reduce, which then aborts the process
      # (tests/test_runahead.py).
      metrics = jax.device_get(metrics)
      t2 = time.perf_counter()
      spent["host_batches_s"] += t1 - t0
      spent["device_s"] += t2 - t1
      _check_finite(jobs, ckpts, metrics["loss"], a, hint, was_active)
      for i, row in enumerate(metrics["loss"]):
        if was_active[i]:
          losses[i].append(row)
      pending.append(metrics)
      val = {}
      if validate and (b % eval_every == 0 or b == steps):
        for i, job in enumerate(jobs):
          if was_active[i]:
            val[i] = _evaluate(criterion, _variables(_unstack(state, i)), job, stopping[i], b, patience)
            val_history[i][b] = val[i]
        active = np.array([st.stopped_at < 0 for st in stopping])
        spent["validation_s"] += time.perf_counter() - t2
      if bar is not None:
        shown = {"loss": float(np.mean(metrics["loss"][was_active, -1]))}
        if val:
          shown["val_loss"] = float(np.mean(list(val.values())))
        bar.update(b if active.any() else steps, **shown)
      save = any(ckpts) and (b % tc.checkpoint_every == 0 or b == steps or not active.any())
      if save or b % tc.log_every == 0 or b == steps or val:
        now = time.perf_counter()
        _log(name, jobs, pending, b, (b - tick_step) / max(now - tick, 1e-9), float(schedule(b - 1)),
             was_active, val, stopping, spent)
        pending, tick, tick_step = [], now, b
        spent = dict.fromkeys(SPENT_PARTS, 0.0)
      stop = preemption.requested() and b < steps and active.any()   # SIGTERM: save this chunk end and stop
      if save or (stop and any(ckpts)):
        t3 = time.perf_counter()
        save_checkpoints(ckpts, stop_ckpts, functools.partial(_unstack, state), [st.saved for st in stopping], b)
        spent["checkpoint_s"] += time.perf_counter() - t3
      if stop:
        raise preemption.Preempted(f"model {name}: stopped by SIGTERM at step {b} of {steps}, " + (
            "checkpoint saved; rerun the same command to resume" if any(ckpts) else
            "nothing saved (no checkpoints)"))
  finally:
    _close(ckpts + stop_ckpts)
    for job in jobs:
      if job.writer is not None:
        job.writer.close()   # flush the event files
    if bar is not None:
      bar.close()
  fitted = []
  for i, st in enumerate(stopping):
    final = to_host(_variables(_unstack(state, i)))
    record = None
    if validate:
      record = {"best_step": st.best_step, "best_val_loss": st.best, "val_loss": val_history[i],
                "stopped_at": st.stopped_at if st.stopped_at >= 0 else None}
      if st.best_variables is not None:
        final = st.best_variables
    fitted.append(Fitted(final, np.concatenate(losses[i]) if losses[i] else np.zeros(0, np.float32), start, record))
  return fitted


def _variables(state) -> Dict[str, Any]:
  """{"params", "constants"} of a TrainState."""
  return {"params": state.params, "constants": state.constants}


def _evaluate(criterion, variables, job: Job, stopping: _Stopping, step: int, patience: int) -> float:
  """The criterion of one model at `step` on its held-out rows; updates its `stopping` state
  (best value and variables, evaluations since, stop step) and returns the value."""
  value = float(np.float32(criterion(variables, job.inputs.val_x, job.inputs.val_contrastive,
                                     job.inputs.objective.eps)))
  if np.isfinite(value) and value < stopping.best:
    stopping.best, stopping.best_step, stopping.bad = value, step, 0
    stopping.best_variables = jax.device_get(variables)
  else:
    stopping.bad += 1
    if patience and stopping.bad >= patience:
      stopping.stopped_at = step
      logger.info("%s: stopped early at step %d (best val_loss %.4g at step %d)", job.label, step,
                  stopping.best, stopping.best_step)
  return value


def _log(name: str, jobs: Sequence[Job], pending: Sequence[Dict[str, np.ndarray]], step: int,
         steps_per_s: float, lr: float, active: np.ndarray, val: Dict[int, float],
         stopping: Sequence[_Stopping], spent: Dict[str, float]) -> None:
  """One record per model that trained (metric means over the steps since the last record, the
  learning rate of the last step, the validation criterion if evaluated) and one log line
  (at DEBUG: the progress bar shows the same)."""
  merged = {k: np.concatenate([m[k] for m in pending], axis=1) for k in pending[0]}   # {k: [N, steps]}
  for i, job in enumerate(jobs):
    if job.writer is None or not active[i]:
      continue
    record = {k: float(np.mean(v[i])) for k, v in merged.items()}
    record.update(model=name, step=step, steps_per_s=steps_per_s, lr=lr)
    record.update({k: round(v, 4) for k, v in spent.items()})
    if i in val:
      record.update(val_loss=val[i], best_val_loss=stopping[i].best)
    if len(jobs) > 1:
      record["vmapped_runs"] = len(jobs)
    job.writer.write(record)
  if len(jobs) == 1:
    logger.debug("model %s step %d: %s", name, step,
                ", ".join(f"{k}={float(np.mean(v)):.4g}" for k, v in merged.items()) + f", steps_per_s={steps_per_s:.4g}")
  else:
    logger.debug("model %s of %d runs, step %d: mean loss %.4g", name, len(jobs), step, float(np.mean(merged["loss"])))


def fit_flow(name: str, model: Flow, config: ml_collections.ConfigDict, inliers: np.ndarray,
             contrastive: Optional[np.ndarray], objective: plan.Objective, workdir: str, seed: int,
             writer: Optional[MetricsWriter], mixtures: Optional[Dict[str, Any]] = None,
             init_variables: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
  """One model of a run, checkpointed under <workdir>/checkpoints/<name>; returns its variables.

  The N = 1 case of `fit_models`, for scripts and tests that train one flow directly.
  """
  job = Job(plan.ModelInputs(inliers, contrastive, objective, mixtures or {}), seed, init_variables,
            os.path.join(workdir, "checkpoints", name), writer, f"model {name!r}")
  return fit_models(model, config.train, config.preprocess.noise_std, [job], name=name)[0].variables
