"""Many independent runs as one compiled program: `jax.vmap` over parameters and data.

Runs the sweep declared next to a config (`sweep(add)`, see
`config_lib.declared_sweep`). Runs that differ only in `seed`, `data.*`, `baselines.*` and
`objective.eps` (e.g. the ten CIFAR-10 classes x three seeds of Table 1, each class with its own
baseline knobs under `,raw`) share the flow, the optimiser and the batch shapes, so they train
as one program per model (`experiment.train_and_evaluate_many`, `training.loop.fit_models` with
N models).
Runs that differ in anything else form separate groups, each one program.

Every run keeps its own workdir, checkpoints, metrics.jsonl, scores.npz and
results.json, equal within float tolerance to its separate run
(`python -m cnf_jax.main` with the same config): same initialisation, batches,
noise and clamp eps per model (eps may differ per model, e.g. with eps_auto).
"""
import fnmatch
import json
import logging
import os
from typing import Dict, List, Optional, Sequence

import ml_collections

from cnf_jax.errors import UserInputError
from cnf_jax.experiments import config_lib
from cnf_jax.experiments import experiment
from cnf_jax.training import progress

logger = logging.getLogger(__name__)

# Config sections (or dotted keys) that may differ between runs trained as one program:
# host-side data and seeds, the baselines (fitted per run after training, from the run's own
# config) and the clamp eps (a traced argument of the vmapped step).
PER_RUN_KEYS = ("seed", "data", "baselines", "objective.eps")


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


def train_and_evaluate_many(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str],
                            wait: bool = False) -> List[dict]:
  """`experiment.train_and_evaluate` for runs that differ only in seed / data / eps, as one program per
  model; returns each run's results dict. UserInputError naming the keys if they differ in more."""
  check_shared(configs)
  return experiment.train_and_evaluate_many(configs, workdirs, wait)


def declared_configs(config_path: str, extra_arg: str = "", only: Sequence[str] = (),
                     settings: Optional[Dict[str, str]] = None):
  """(runs, configs) of the sweep declared in `config_path`.

  extra_arg: words added to every run's config arg (e.g. 'runlocal'); only: run names or
  shell patterns (fnmatch: 'cat-*', '*methods=kde*') to keep, default all; each must match
  a run; settings: {dotted key: string} set in every run (e.g. data.path).
  """
  module = config_lib.load_config_module(config_path)
  runs = list(config_lib.declared_sweep(module, config_path))
  if only:
    unknown = sorted(p for p in only if not any(fnmatch.fnmatchcase(r.name, p) for r in runs))
    if unknown:
      raise UserInputError(f"--runs names unknown run(s) {', '.join(unknown)}; "
                           f"the sweep has {', '.join(r.name for r in runs)}")
    runs = [r for r in runs if any(fnmatch.fnmatchcase(r.name, p) for p in only)]
  configs = [r.config(module, extra_arg) for r in runs]
  for c in configs:
    for key, text in (settings or {}).items():
      config_lib.set_from_string(c, key, text)
  return runs, configs


def run_declared_sweep(config_path: str, workdir: str, extra_arg: str = "", only: Sequence[str] = (),
                       settings: Optional[Dict[str, str]] = None, wait: bool = False) -> Dict[str, dict]:
  """Trains the sweep declared in `config_path`, each group of compatible runs as one program.

  Run r goes to <workdir>/<r.name>. Returns {run name: results}.
  """
  runs, configs = declared_configs(config_path, extra_arg, only, settings)
  out = {}
  bar = progress.Progress(len(runs), "sweep", unit="runs")
  for group in group_runs(configs):
    logger.info("training %d runs as one program: %s", len(group), ", ".join(runs[i].name for i in group))
    results = train_and_evaluate_many([configs[i] for i in group],
                                      [os.path.join(workdir, runs[i].name) for i in group], wait)
    out.update({runs[i].name: r for i, r in zip(group, results)})
    bar.update(len(out))
  bar.close()
  return out
