"""Many independent runs as one compiled program: `jax.vmap` over parameters and data.

  python -m cnf_jax.sweep --config=configs/oneclass.py --workdir=/tmp/cnf/oneclass_table
  python -m cnf_jax.sweep --config=configs/toy2d.py --arg=runlocal --workdir=/tmp/cnf/toy2d_seeds

Runs the sweep declared next to the config (`sweep(add)`, see
`config_lib.declared_sweep`). Runs that differ only in `seed`, `data.*` and `objective.eps`
(e.g. the ten CIFAR-10 classes x three seeds of Table 1) share the flow, the
optimiser and the batch shapes, so their train steps stack:
`jax.vmap(train_step)` over a TrainState with a leading model axis [N, ...] and
batches [N, B, D]. One compilation trains all N, and each step hands the
accelerator N models' matmuls at once. Runs that differ in anything else form
separate groups, each one program.

Every run keeps its own workdir, checkpoints, metrics.jsonl, scores.npz and
results.json, equal within float tolerance to its separate run
(`python -m cnf_jax.main` with the same config): same initialisation, batches,
noise and clamp eps per model (eps may differ per model, e.g. with eps_auto).
"""
import dataclasses
import json
import logging
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from cnf_jax.experiments import config_lib
from cnf_jax.experiments import experiment
from cnf_jax.training import host_memory
from cnf_jax.training.checkpoints import Checkpoints
from cnf_jax.data.mixture import make_sampler
from cnf_jax.errors import NonFiniteLossError, UserInputError
from cnf_jax.flows import Flow
from cnf_jax.training.train import (CONTRASTIVE_KINDS, MetricsWriter, Objective, data_mesh, global_batch,
                           make_optimizer, make_train_step, replicate, start_state, to_host)

logger = logging.getLogger(__name__)

# Config sections (or dotted keys) that may differ between runs trained as one program:
# host-side data and seeds, and the clamp eps (a traced argument of the vmapped step).
PER_RUN_KEYS = ("seed", "data", "objective.eps")

# (inliers [N, D], contrastive [M, D] or None, objective) of one model.
ModelInputs = Tuple[np.ndarray, Optional[np.ndarray], Objective]


def shared_signature(config: ml_collections.ConfigDict) -> str:
  """The part of a config that must be equal for runs to share one program (JSON)."""
  d = json.loads(config.to_json())
  for key in PER_RUN_KEYS:
    *parents, last = key.split(".")
    node = d
    for part in parents:
      node = node.get(part, {})
    node.pop(last, None)
  return json.dumps(d, sort_keys=True)


def group_runs(configs: Sequence[ml_collections.ConfigDict]) -> List[List[int]]:
  """Indices of configs grouped by `shared_signature`, in first-seen order."""
  groups: Dict[str, List[int]] = {}
  for i, c in enumerate(configs):
    groups.setdefault(shared_signature(c), []).append(i)
  return list(groups.values())


def check_shared(configs: Sequence[ml_collections.ConfigDict]) -> None:
  """UserInputError naming the keys that differ if the configs cannot be one program."""
  first = json.loads(shared_signature(configs[0]))
  for c in configs[1:]:
    other = json.loads(shared_signature(c))
    differing = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
    for section in ("objective",):  # name the key, not just the section
      if section in differing and isinstance(first.get(section), dict):
        a, b = first[section], other.get(section, {})
        differing.remove(section)
        differing += sorted(f"{section}.{k}" for k in set(a) | set(b) if a.get(k) != b.get(k))
    if differing:
      raise UserInputError(
          f"runs trained as one vmapped program may differ only in {', '.join(PER_RUN_KEYS)}; these differ in "
          f"{', '.join(differing)}. Train them in separate groups (group_runs) or separately")


def _stack(trees: Sequence[Any]) -> Any:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _unstack(tree: Any, i: int) -> Any:
  return jax.tree.map(lambda x: x[i], tree)


def make_sweep_step(model: Flow, config: ml_collections.ConfigDict, kind: str, batch_sizes: Dict[str, int],
                    permute: str = ""):
  """jit(vmap(train_step)) for N models; returns (step, replicated, batch sharding).

  step(states [N, ...], batch {k: [N, B, D]}, rngs [N], eps [N]) -> (states, metrics {k: [N]}).
  The per-model clamp eps is an argument (traced), so models with different eps
  share the program; the oe margin and weight come from the shared config. With
  train.parallel='data' each model's batch is split over the devices (axis 1),
  exactly as in a single run.
  """
  tx = make_optimizer(config.train)
  noise_std = config.preprocess.noise_std
  oc = config.objective

  def one_model_step(state, batch, rng, eps):
    objective = Objective(kind, eps, permute, margin=oc.oe_margin, weight=oc.oe_weight)
    return make_train_step(model, tx, objective, noise_std)(state, batch, rng)

  mesh = data_mesh(config.train.parallel, batch_sizes)
  replicated = NamedSharding(mesh, PartitionSpec())
  batch = NamedSharding(mesh, PartitionSpec(None, "data"))
  step = jax.jit(jax.vmap(one_model_step), in_shardings=(replicated, batch, replicated, replicated),
                 out_shardings=(replicated, replicated), donate_argnums=0)
  return step, tx, replicated, batch


def _common_start(ckpts: Sequence[Checkpoints]) -> int:
  """The step all models resume from: the oldest latest step (a kill between the N saves of
  one step leaves some models one checkpoint behind; the older one is still kept)."""
  latest = [c.latest_step() or 0 for c in ckpts]
  start = min(latest)
  if start:
    missing = [c.directory for c in ckpts if start not in c.all_steps()]
    if missing:
      raise UserInputError(
          f"cannot resume the sweep: checkpoint step {start} is missing in {', '.join(missing)} "
          "(runs at different steps, e.g. trained separately); finish them separately or delete their checkpoints")
  return start


def fit_flows(name: str, model: Flow, config: ml_collections.ConfigDict, inputs: Sequence[ModelInputs],
              workdirs: Sequence[str], seeds: Sequence[int], writers: Sequence[MetricsWriter],
              mixtures: Optional[Sequence[Optional[dict]]] = None,
              init_variables: Optional[Sequence[Optional[dict]]] = None) -> List[dict]:
  """`fit_flow` for N models at once; returns each model's variables {"params", "constants"}.

  Model i trains on inputs[i] with seeds[i] (and mixtures[i], see `fit_flow`), starting
  from init_variables[i] if given (fine-tuning, e.g. oe), checkpoints to
  <workdirs[i]>/checkpoints/<name> and logs to writers[i], exactly as its own `fit_flow`
  call would.
  """
  tc = config.train
  kind, permute = inputs[0][2].kind, inputs[0][2].permute
  if any((obj.kind, obj.permute) != (kind, permute) for _, _, obj in inputs):
    raise ValueError(f"model {name!r}: runs of one program need the same objective kind and permutation")
  sizes = {"inlier": tc.batch_size}
  if kind in CONTRASTIVE_KINDS and permute != "contrastive":
    sizes["contrastive"] = tc.contrastive_batch_size
  step_fn, tx, replicated, batch_sharding = make_sweep_step(model, config, kind, sizes, permute)

  # The same key derivation as fit_flow: key(seed) -> (init, step noise).
  keys = [jax.random.split(jax.random.key(s)) for s in seeds]
  init_variables = init_variables or [None] * len(inputs)
  states = [start_state(model, tx, k[0], init) for k, init in zip(keys, init_variables)]
  step_rngs = replicate(jnp.stack([k[1] for k in keys]), replicated)
  eps = replicate(jnp.asarray([obj.eps for _, _, obj in inputs], jnp.float32), replicated)
  ckpts = [Checkpoints(os.path.join(w, "checkpoints", name), keep=tc.keep_checkpoints) for w in workdirs]
  start = _common_start(ckpts)
  if start:
    states = [c.restore(start, s) for c, s in zip(ckpts, states)]
    for w in writers:
      w.drop_after(name, start)
    logger.info("model %s of %d runs: resumed from step %d", name, len(inputs), start)
  state = replicate(_stack(states), replicated)

  mixtures = [m or {} for m in (mixtures or [None] * len(inputs))]
  samplers = {"inlier": [make_sampler(len(x), tc.batch_size, s, m.get("inlier"))
                         for (x, _, _), s, m in zip(inputs, seeds, mixtures)]}
  arrays = {"inlier": [x for x, _, _ in inputs]}
  if "contrastive" in sizes:
    samplers["contrastive"] = [make_sampler(len(c), tc.contrastive_batch_size, s + 1, m.get("contrastive"))
                               for (_, c, _), s, m in zip(inputs, seeds, mixtures)]
    arrays["contrastive"] = [c for _, c, _ in inputs]

  pending = []
  tick, tick_step = time.perf_counter(), start
  for step in range(start, tc.steps):
    # [N, B, D]: model i's batch is what its separate run would draw at this step.
    batch = {k: np.stack([a[s.indices(step)] for a, s in zip(arrays[k], samplers[k])]) for k in arrays}
    batch = {k: global_batch(v, batch_sharding) for k, v in batch.items()}
    state, metrics = step_fn(state, batch, step_rngs, eps)
    done = step + 1
    pending.append((done, metrics))
    save = done % tc.checkpoint_every == 0 or done == tc.steps
    if save or done % tc.log_every == 0:
      pending = jax.device_get(pending)
      now = time.perf_counter()
      for i, (writer, ckpt) in enumerate(zip(writers, ckpts)):
        losses = [float(m["loss"][i]) for _, m in pending]
        bad = next((s for (s, _), l in zip(pending, losses) if not np.isfinite(l)), None)
        if bad is not None:
          last = ckpt.latest_step()
          raise NonFiniteLossError(
              f"model {name!r} of run {workdirs[i]}: loss is {losses[bad - pending[0][0]]} at step {bad}; "
              f"stopped (the whole sweep). Last good checkpoint: "
              f"{f'step {last}' if last else 'none'}. Lower train.lr, raise preprocess.noise_std, or check the data.")
        record = {k: float(np.mean([m[k][i] for _, m in pending])) for k in pending[-1][1]}
        record.update(model=name, step=done, steps_per_s=(done - tick_step) / (now - tick), vmapped_runs=len(inputs))
        writer.write(record)
      logger.info("model %s of %d runs, step %d: mean loss %.4g", name, len(inputs), done,
                  float(np.mean([m["loss"] for _, m in pending])))
      pending, tick, tick_step = [], now, done
    if save:
      for i, ckpt in enumerate(ckpts):
        ckpt.save(done, _unstack(state, i))
  for ckpt in ckpts:
    ckpt.close()
  return [to_host({"params": _unstack(state.params, i), "constants": _unstack(state.constants, i)})
          for i in range(len(inputs))]


def train_and_evaluate_many(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str]) -> List[dict]:
  """`experiment.train_and_evaluate` for runs that differ only in seed / data, as one program per model.

  Returns each run's results dict; each workdir ends up as its separate run leaves it.
  """
  if len(configs) != len(workdirs) or not configs:
    raise UserInputError(f"need one workdir per config, got {len(configs)} configs and {len(workdirs)} workdirs")
  if len(set(map(os.path.abspath, workdirs))) != len(workdirs):
    raise UserInputError("every run of a sweep needs its own workdir; two runs share one")
  check_shared(configs)
  runs = [experiment.prepare_run(c, w) for c, w in zip(configs, workdirs)]
  dims = sorted({r.data.dim for r in runs})
  if len(dims) > 1:
    raise UserInputError(f"runs of one vmapped program need the same feature dimension; got {dims}")
  # One compiled scorer for all runs (same architecture).
  runs = [dataclasses.replace(r, log_prob=runs[0].log_prob) for r in runs]
  config = configs[0]
  variables: List[Dict[str, dict]] = [{} for _ in runs]
  eps: List[Optional[float]] = [None] * len(runs)
  for name in runs[0].model_names:
    inputs = [experiment.model_inputs(r, name, v) for r, v in zip(runs, variables)]
    if name == "cf":
      eps = [objective.eps for _, _, objective in inputs]
    trained = fit_flows(name, runs[0].model, experiment.model_config(config, name), inputs, workdirs,
                        [experiment.model_seed(c, name) for c in configs], [r.writer for r in runs],
                        [experiment.model_mixtures(r, name) for r in runs],
                        [experiment.initial_variables(name, v) for v in variables])
    for v, t in zip(variables, trained):
      v[name] = t
  return [experiment.evaluate_and_write(r, v, e) for r, v, e in zip(runs, variables, eps)]


def declared_configs(config_path: str, extra_arg: str = "", only: Sequence[str] = (),
                     settings: Optional[Dict[str, str]] = None):
  """(runs, configs) of the sweep declared in `config_path`.

  extra_arg: words added to every run's config arg (e.g. 'runlocal'); only: run names
  to keep (default all); settings: {dotted key: string} set in every run (e.g. data.path).
  """
  module = config_lib.load_config_module(config_path)
  runs = list(config_lib.declared_sweep(module, config_path))
  if only:
    unknown = sorted(set(only) - {r.name for r in runs})
    if unknown:
      raise UserInputError(f"--runs names unknown run(s) {', '.join(unknown)}; "
                           f"the sweep has {', '.join(r.name for r in runs)}")
    runs = [r for r in runs if r.name in set(only)]
  configs = [r.config(module, extra_arg) for r in runs]
  for c in configs:
    for key, text in (settings or {}).items():
      config_lib.set_from_string(c, key, text)
  return runs, configs


def run_declared_sweep(config_path: str, workdir: str, extra_arg: str = "", only: Sequence[str] = (),
                       settings: Optional[Dict[str, str]] = None) -> Dict[str, dict]:
  """Trains the sweep declared in `config_path`, each group of compatible runs as one program.

  Run r goes to <workdir>/<r.name>. Returns {run name: results}.
  """
  runs, configs = declared_configs(config_path, extra_arg, only, settings)
  out = {}
  for group in group_runs(configs):
    logger.info("training %d runs as one program: %s", len(group), ", ".join(runs[i].name for i in group))
    results = train_and_evaluate_many([configs[i] for i in group],
                                      [os.path.join(workdir, runs[i].name) for i in group])
    out.update({runs[i].name: r for i, r in zip(group, results)})
  return out
