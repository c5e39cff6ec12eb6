"""One experiment: train the flows the chosen methods need, score the test set, write results.

  results = train_and_evaluate(config, workdir)              # one run
  results = train_and_evaluate_many(configs, workdirs)       # N runs, one program per model

What is trained for which method is `cnf_jax.training.plan` (models flow,
contrastive_flow, eps_probe, cf, oe; each checkpointed under
<workdir>/checkpoints/<name>); how it is trained is `cnf_jax.training.loop`. A single
run is the N = 1 case of the many-run path, so a run and its place in a vmapped sweep
go through the same code.

The baselines of cnf_jax/evaluation/baselines.py (mse, knn, ...) train no model: they
are fitted on the preprocessed inliers (and contrastive data) when the run is scored.

Outputs in <workdir>: config.json, metrics.jsonl, scores.npz, results.json
(written last and atomically: its presence means the run finished).
"""
import dataclasses
import errno
import hashlib
import json
import logging
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import ml_collections
import numpy as np

from cnf_jax import tasks
from cnf_jax.data import preprocessing
from cnf_jax.data import task_data
from cnf_jax.errors import UserInputError
from cnf_jax.evaluation import baselines
from cnf_jax.evaluation import metrics
from cnf_jax.evaluation import selection
from cnf_jax.experiments import ablation
from cnf_jax.experiments import config_lib
from cnf_jax.experiments import workdir_lock
from cnf_jax.files import atomic_write, write_json_atomic
from cnf_jax.flows import flow_from_config
from cnf_jax.flows.flow import resolve_compute_dtype
from cnf_jax.training import loop
from cnf_jax.training import objectives
from cnf_jax.training import plan
from cnf_jax.training import preemption
from cnf_jax.training.summaries import MetricsWriter
from cnf_jax.training.train import is_primary

logger = logging.getLogger(__name__)

# Config sections that define the trained models; a workdir refuses to resume
# with different values.
IDENTITY_KEYS = ("task", "seed", "data", "preprocess", "flow", "objective")


def _identity(config: ml_collections.ConfigDict, dim: int) -> dict:
  d = json.loads(config.to_json())
  out = {k: d.get(k) for k in IDENTITY_KEYS}
  out["feature_dim"] = dim
  return out


def make_workdir(workdir: str) -> None:
  """Creates `workdir` (and its parents) or raises a one-line UserInputError."""
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:   # exists as a file, no permission, read-only filesystem, full disk
    raise UserInputError(f"--workdir {workdir} is not a usable directory ({e.strerror}); "
                         "choose another path") from None


def is_writable(workdir: str) -> bool:
  """Whether files can be created in `workdir` (an existing directory). Tried, not looked up:
  permission bits do not tell for root, nor for a read-only mount."""
  probe = os.path.join(workdir, f".write-probe-{os.getpid()}")
  try:
    with open(probe, "w"):
      pass
    os.remove(probe)
    return True
  except OSError as e:
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
      return False
    raise


def finished_results(config: ml_collections.ConfigDict, workdir: str) -> Optional[dict]:
  """The results of the finished run of exactly `config` in `workdir`, or None: results.json
  exists and config.json equals this config (methods, steps, ... included)."""
  try:
    with open(os.path.join(workdir, "config.json")) as f:
      same = json.load(f) == json.loads(config.to_json())
    with open(os.path.join(workdir, "results.json")) as f:
      return json.load(f) if same else None
  except (OSError, ValueError):
    return None


def read_only_results(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """A read-only workdir: its finished run's results, read without writing anything, or a
  UserInputError when it holds no finished run of this config (training needs to write)."""
  results = finished_results(config, workdir)
  if results is None:
    raise UserInputError(f"workdir {workdir} is read-only and holds no finished run of this config; "
                         "make it writable (or copy it somewhere writable) to train there, or use another --workdir")
  logger.info("workdir %s is read-only and holds this finished run: its results are returned, nothing is written",
              workdir)
  return results


def _drop_results_of_another_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Removes results.json when it was written under another config.json than `config`.

  `finished_results` trusts a results.json whose config.json equals the config. A run started with
  new settings (more methods, another baseline knob) rewrites config.json before it trains; if it
  were stopped then, the old results.json would pass for the new config's, and the next sweep
  would skip the run. The new run writes its own results.json when it finishes.
  """
  results_path = os.path.join(workdir, "results.json")
  if not os.path.exists(results_path):
    return
  try:
    with open(os.path.join(workdir, "config.json")) as f:
      same = json.load(f) == json.loads(config.to_json())
  except (OSError, ValueError):
    same = False
  if not same:
    logger.info("workdir %s: results.json was made with another config; removed, this run writes its own",
                workdir)
    os.remove(results_path)


def check_workdir(workdir: str, config: ml_collections.ConfigDict, dim: int, preprocess_stats: dict) -> None:
  """Refuses a workdir that holds a run of another model; records this run's identity otherwise.

  Also writes config.json and preprocessing.json (what `cnf_jax.score` applies to new inputs).
  """
  make_workdir(workdir)
  path = os.path.join(workdir, "run_identity.json")
  identity = _identity(config, dim)
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    differing = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
    if differing:
      details = "; ".join(f"{k}: was {previous.get(k)!r}, now {identity.get(k)!r}" for k in differing
                          if not isinstance(identity.get(k), dict))
      raise UserInputError(
          f"workdir {workdir} holds a run with a different {', '.join(differing)}"
          f"{' (' + details + ')' if details else ''}; its checkpoints do not fit this config. "
          "Use a new --workdir, or delete this one to start over.")
  elif is_primary():  # with jax.distributed, process 0 writes; the others only check
    write_json_atomic(path, identity)
  if is_primary():
    _drop_results_of_another_config(workdir, config)
    write_json_atomic(os.path.join(workdir, "config.json"), json.loads(config.to_json()))
    preprocessing.save(os.path.join(workdir, "preprocessing.json"), config.preprocess.normalize,
                       preprocess_stats)


def _preprocess(config, data: task_data.TaskData) -> Tuple[task_data.TaskData, dict]:
  """Fits the preprocessing on the training inliers and applies it to every set; returns (data, stats)."""
  method = config.preprocess.normalize
  stats = preprocessing.fit(data.inliers, method)
  apply = lambda x, name: preprocessing.apply(x, method, stats, name)
  contrastive = None if data.contrastive is None else apply(data.contrastive, "contrastive features")
  extra = {k: (apply(x, f"test set {k!r}"), y) for k, (x, y) in data.extra_test_sets.items()}
  prepared = dataclasses.replace(data, inliers=apply(data.inliers, "inlier training features"),
                                 contrastive=contrastive, test=apply(data.test, "test features"),
                                 extra_test_sets=extra)
  return prepared, stats


def _method_scores(methods, log_p: Dict[str, np.ndarray], baseline: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """{method: anomaly scores [T]}: baselines' from `baseline`, flow methods' from the models' log p."""
  return {m: baseline[m] if m in baseline else plan.anomaly_scores(m, log_p) for m in methods}


def _hparams(config: ml_collections.ConfigDict) -> Dict[str, object]:
  """The run's config as TensorBoard hparams: dotted keys -> number, bool or string."""
  flat = {}
  for key in config_lib.flatten_keys(config):
    node = config
    for part in key.split("."):
      node = node[part]
    flat[key] = node if isinstance(node, (int, float, bool, str)) else str(node)
  return flat


def _aurocs(scores: Dict[str, np.ndarray], is_anomaly: np.ndarray) -> Dict[str, float]:
  return {m: metrics.auroc(s, is_anomaly) for m, s in scores.items()}


@dataclasses.dataclass
class Run:
  """One experiment after loading: what its models are trained on and how they are scored.

  Attributes:
    data: the preprocessed TaskData (inliers [N, D], contrastive [M, D], test [T, D], ...).
    model: the Flow every model of the run uses.
    log_prob: log_prob(variables, x [N, D]) -> [N], compiled once per architecture.
    model_names: the models to train, in order (`plan.models_needed`).
    fit_data: what the models are trained on (`plan.FitData`).
    probe_held: the inliers held out of the eps probe (its quantile is taken on them), or None.
    preprocess_stats: the preprocessing statistics fitted on the training inliers.
  """
  config: ml_collections.ConfigDict
  workdir: str
  task: object
  methods: tuple
  data: task_data.TaskData
  model: object
  log_prob: Callable
  writer: MetricsWriter
  model_names: List[str]
  fit_data: plan.FitData
  probe_held: Optional[np.ndarray]
  preprocess_stats: dict
  validation: Dict[str, dict] = dataclasses.field(default_factory=dict)   # model -> loop.Fitted.validation


def prepare_run(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Validates the config, loads and preprocesses the data; writes nothing (bad input leaves no
  workdir behind; `check_workdir` claims it once it is locked)."""
  config_lib.validate(config)
  task = tasks.get(config.task)
  methods = config_lib.method_list(config)
  needs_contrastive = plan.uses_contrastive(methods) or any(m in baselines.USES_CONTRASTIVE for m in methods)
  data = task_data.validate(task.load_data(config), needs_contrastive)
  data, stats = _preprocess(config, data)
  model = flow_from_config(config.flow, data.dim)
  oc = config.objective
  fit_data = plan.with_validation(
      plan.FitData(data.inliers, data.contrastive, data.contrastive_permute, mixture=data.contrastive_mixture),
      config.seed, config.train.validation_fraction)
  held = None
  if plan.eps_source(oc.eps_auto, oc.eps_holdout) == "eps_probe":
    held, kept = plan.probe_split(fit_data.inliers, config.seed, oc.eps_holdout)
    fit_data = dataclasses.replace(fit_data, probe_inliers=kept)
  return Run(config=config, workdir=workdir, task=task, methods=methods, data=data, model=model,
             log_prob=metrics.make_log_prob_fn(model, config.eval.batch_size),
             writer=MetricsWriter(os.path.join(workdir, "metrics.jsonl")),
             model_names=plan.models_needed(methods, oc.eps_auto, oc.eps_holdout), fit_data=fit_data,
             probe_held=held, preprocess_stats=stats)


# Arrays at least this large are kept once when several runs of one program hold equal copies.
SHARE_MIN_BYTES = 1 << 20


class SharedArrays:
  """Keeps one copy of equal arrays across the runs of one vmapped program.

  The runs of a Table 1 sweep load the same contrastive set and test set, and the runs of one
  seed hold out the same contrastive rows, so thirty runs held thirty equal copies (about
  0.5 GB a run on raw 1,280-d features). `share(x)` returns the array already kept with x's
  contents (compared in full, not only by hash) or keeps x. Shared arrays are made read-only,
  so that no run can change another's data in place.
  """

  def __init__(self):
    self._kept: Dict[tuple, np.ndarray] = {}

  def share(self, x):
    if not isinstance(x, np.ndarray) or x.nbytes < SHARE_MIN_BYTES:
      return x
    digest = hashlib.blake2b(np.ascontiguousarray(x).data, digest_size=16).digest()
    key = (x.shape, x.dtype.str, digest)
    kept = self._kept.get(key)
    if kept is None:
      self._kept[key] = x
      return x
    if not np.array_equal(kept, x):
      return x
    kept.flags.writeable = False
    return kept


def share_arrays(run: Run, shared: SharedArrays) -> Run:
  """`run` with its data and training rows replaced by `shared`'s equal copies (see SharedArrays)."""
  s = shared.share
  d, f = run.data, run.fit_data
  data = dataclasses.replace(d, inliers=s(d.inliers), contrastive=s(d.contrastive), test=s(d.test),
                             extra_test_sets={k: (s(x), y) for k, (x, y) in d.extra_test_sets.items()})
  fit_data = dataclasses.replace(f, inliers=s(f.inliers), contrastive=s(f.contrastive),
                                 probe_inliers=s(f.probe_inliers), val_inliers=s(f.val_inliers),
                                 val_contrastive=s(f.val_contrastive))
  return dataclasses.replace(run, data=data, fit_data=fit_data, probe_held=s(run.probe_held))


def prepare_runs(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str]) -> List[Run]:
  """`prepare_run` for each config; several runs keep one copy of their equal arrays
  (SharedArrays), each run's own copies freed before the next run loads."""
  if len(configs) == 1:
    return [prepare_run(configs[0], workdirs[0])]
  shared = SharedArrays()
  return [share_arrays(prepare_run(c, w), shared) for c, w in zip(configs, workdirs)]


def clamp_eps(run: Run, trained: Dict[str, dict]) -> float:
  """CF's clamp eps: objective.eps, or with eps_auto the quantile (+ offset) of log p under the
  model `plan.eps_source` names: the eps probe on its held-out inliers, or the flow on the
  training inliers (eps_holdout = 0)."""
  oc = run.config.objective
  source = plan.eps_source(oc.eps_auto, oc.eps_holdout)
  if source is None:
    return float(oc.eps)
  rows = run.probe_held if source == "eps_probe" else run.fit_data.inliers
  eps = objectives.auto_eps(run.log_prob(trained[source], rows), oc.eps_quantile, oc.eps_offset)
  logger.info("contrastive flow: clamp eps = %.4g (from model %s)", eps, source)
  return eps


def train_models(runs: Sequence[Run]) -> Tuple[List[Dict[str, dict]], List[Optional[float]]]:
  """Trains (or resumes) every model of the runs' plan, in plan order, the N runs of each
  model as one program (`loop.fit_models`). Returns ({model: variables} per run, CF's clamp
  eps per run or None)."""
  config, oc = runs[0].config, runs[0].config.objective
  variables: List[Dict[str, dict]] = [{} for _ in runs]
  eps: List[Optional[float]] = [None] * len(runs)
  for name in runs[0].model_names:
    spec = plan.MODELS[name]
    jobs = []
    for i, run in enumerate(runs):
      if name == "cf":
        eps[i] = clamp_eps(run, variables[i])
      inputs = plan.model_inputs(name, run.fit_data, eps[i] or 0.0, oc.oe_margin, oc.oe_weight)
      label = f"model {name!r}" + (f" of run {run.workdir}" if len(runs) > 1 else "")
      jobs.append(loop.Job(inputs, plan.model_seed(run.config.seed, name),
                           variables[i][spec.starts_from] if spec.starts_from else None,
                           os.path.join(run.workdir, "checkpoints", name), run.writer, label))
    fitted = loop.fit_models(runs[0].model, config.train, config.preprocess.noise_std, jobs,
                             steps=config.train[spec.steps_key], name=name)
    for run, v, f in zip(runs, variables, fitted):
      v[name] = f.variables
      if f.validation is not None:
        run.validation[name] = f.validation
  return variables, eps


def trains_models(config: ml_collections.ConfigDict) -> bool:
  """Whether a run of `config` trains any flow (False for a run of baselines only)."""
  oc = config.objective
  return bool(plan.models_needed(config_lib.method_list(config), oc.eps_auto, oc.eps_holdout))


def train_and_evaluate_many(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str],
                            wait: bool = False) -> List[dict]:
  """Runs that may differ only in seed, data, baselines and objective.eps (see `sweep.check_shared`),
  trained as one program per model; returns each run's results dict. Each workdir ends up
  as its separate run leaves it.

  Each workdir is locked for the whole run (`workdir_lock`: another process on it is an
  error, or with `wait` a wait). A read-only workdir holding the finished run of the same
  config is read, not written (`read_only_results`).
  """
  if len(configs) != len(workdirs) or not configs:
    raise UserInputError(f"need one workdir per config, got {len(configs)} configs and {len(workdirs)} workdirs")
  if len(set(map(os.path.abspath, workdirs))) != len(workdirs):
    raise UserInputError("every run of a sweep needs its own workdir; two runs share one")
  results: List[Optional[dict]] = [None] * len(configs)
  todo = []
  for i, (c, w) in enumerate(zip(configs, workdirs)):
    if os.path.isdir(w) and not is_writable(w):
      results[i] = read_only_results(c, w)
    else:
      todo.append(i)
  if not todo:
    return results
  for i in todo:
    config_lib.validate(configs[i])  # every config before any run is written
  if len(todo) > 1 and not any(trains_models(configs[i]) for i in todo):
    # Baselines only: there is no program to share, so each run is loaded, scored and released
    # in turn. Holding every run's data at once (the path below) took the ten raw 1,280-d
    # CIFAR-10 runs past 7.5 GB of host memory for nothing.
    for k, i in enumerate(todo):
      _stop_if_preempted(k, len(todo))
      results[i] = train_and_evaluate_many([configs[i]], [workdirs[i]], wait)[0]
    return results
  runs = prepare_runs([configs[i] for i in todo], [workdirs[i] for i in todo])
  dims = sorted({r.data.dim for r in runs})
  if len(dims) > 1:
    raise UserInputError(f"runs of one vmapped program need the same feature dimension; got {dims}")
  for r in runs:
    make_workdir(r.workdir)
  with workdir_lock.hold([r.workdir for r in runs] if is_primary() else [], wait):
    for r in runs:
      check_workdir(r.workdir, r.config, r.data.dim, r.preprocess_stats)
    variables, eps = train_models(runs)
    for k, (i, r, v, e) in enumerate(zip(todo, runs, variables, eps)):
      _stop_if_preempted(k, len(runs))
      results[i] = evaluate_and_write(r, v, e)
  return results


def _stop_if_preempted(done: int, total: int) -> None:
  """Between the runs of a sweep: after SIGTERM, stop before the next run (scoring one run's
  baselines can take minutes; the finished runs keep their results.json)."""
  if done and preemption.requested():
    raise preemption.Preempted(f"stopped by SIGTERM after {done} of {total} runs, each finished one has its "
                               "results.json; rerun the same command to do the rest")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, wait: bool = False) -> dict:
  """Runs the experiment `config` in `workdir` (resuming what is there); returns the results dict.
  wait: wait for another process that holds the workdir instead of raising UserInputError."""
  return train_and_evaluate_many([config], [workdir], wait)[0]


def evaluate_and_write(run: Run, variables: Dict[str, dict], eps) -> dict:
  """Scores the test sets with the trained models, writes scores.npz and results.json (last)."""
  config, workdir, data, methods, log_prob, task = (run.config, run.workdir, run.data, run.methods,
                                                     run.log_prob, run.task)
  log_p_test = {name: log_prob(v, data.test) for name, v in variables.items()}
  con_rows, con_source = ablation.contrastive_eval_rows(data, config.seed)
  # Baselines are fitted here (once) and score the test set, every extra test set and the
  # sample of contrastive data.
  sets = {("test",): data.test, **{("extra", k): x for k, (x, _) in data.extra_test_sets.items()}}
  if con_rows is not None:
    sets[("contrastive",)] = con_rows
  held_out = run.fit_data.val_inliers is not None and run.fit_data.val_contrastive is not None
  if held_out:
    sets[("val_inliers",)] = run.fit_data.val_inliers
    sets[("val_contrastive",)] = run.fit_data.val_contrastive
  # The baselines are fitted on the rows the flows train on: without the held-out rows of
  # train.validation_fraction (all inliers and contrastive rows when it is 0).
  baseline_scores, baseline_seconds = baselines.score_sets(
      [m for m in methods if baselines.is_baseline(m)], run.fit_data.inliers, run.fit_data.contrastive, sets,
      config.baselines, config.seed, progress=is_primary())
  scores_test = _method_scores(methods, log_p_test, baseline_scores[("test",)])
  results = {
      "task": config.task,
      "methods": list(methods),
      **{name: {m: fn(s, data.test_is_anomaly) for m, s in scores_test.items()}
         for name, fn in metrics.METRICS.items()},
      "feature_dim": data.dim,
      "num_inliers": len(data.inliers),
      "num_contrastive": 0 if data.contrastive is None else len(data.contrastive),
      "num_test": len(data.test),
      "num_test_anomalies": int(data.test_is_anomaly.sum()),
      "steps": config.train.steps,
  }
  if variables:
    # What flow.compute_dtype resolved to on this machine ('auto' depends on the CPU); a run of
    # baselines only trained no flow, so it has none to record.
    results["compute_dtype"] = resolve_compute_dtype(config.flow.compute_dtype)
  if eps is not None:
    results["eps"] = eps
  if config.train.validation_fraction > 0:
    # Per model: the step whose parameters it kept, their held-out criterion, and where it stopped
    # (None: it ran all steps); the criterion at every eval step is in metrics.jsonl.
    results["early_stopping"] = {
        "validation_fraction": config.train.validation_fraction, "patience": config.train.patience,
        "num_val_inliers": len(run.fit_data.val_inliers),
        "models": {m: {k: v for k, v in rec.items() if k != "val_loss"} for m, rec in run.validation.items()}}
  if held_out:
    # The label-free selection criterion (evaluation/selection.py): each method's AUROC of the
    # held-out contrastive rows against the held-out inliers; no test row enters it.
    val = {}
    for part in ("val_inliers", "val_contrastive"):
      x = getattr(run.fit_data, part)
      val[part] = _method_scores(methods, {name: log_prob(v, x) for name, v in variables.items()},
                                 baseline_scores[(part,)])
    results["selection"] = selection.criterion_record(val["val_inliers"], val["val_contrastive"])
  if baseline_seconds:
    results["baseline_seconds"] = baseline_seconds  # fit + scoring of every set, per baseline.
  if data.test_group is not None:
    inlier = ~data.test_is_anomaly
    results["auroc_by_group"] = {}
    for g, group_name in enumerate(data.group_names):
      member = data.test_group == g
      if not (member & data.test_is_anomaly).any():
        continue  # the inlier group itself
      keep = inlier | member
      results["auroc_by_group"][group_name] = _aurocs(
          {m: s[keep] for m, s in scores_test.items()}, data.test_is_anomaly[keep])
      # The inliers against every anomaly except this group (e.g. "other classes" of Fig. 6-7).
      keep = ~member
      if (data.test_is_anomaly[keep]).any():
        results.setdefault("auroc_excluding", {})[group_name] = _aurocs(
            {m: s[keep] for m, s in scores_test.items()}, data.test_is_anomaly[keep])
  for set_name, (x, y) in data.extra_test_sets.items():
    lp = {name: log_prob(v, x) for name, v in variables.items()}
    results.setdefault("auroc_extra", {})[set_name] = _aurocs(
        _method_scores(methods, lp, baseline_scores[("extra", set_name)]), y)
  results.update(ablation.contrastive_record(run))
  # The score histograms of the contrastive data (paper Fig. 8, 9) need its scores too.
  con_scores = {}
  if con_rows is not None:
    lp = {name: log_prob(v, con_rows) for name, v in variables.items()}
    con_scores = {f"contrastive_score_{m}": s
                  for m, s in _method_scores(methods, lp, baseline_scores[("contrastive",)]).items()}
    con_scores["contrastive_source"] = con_source

  if not is_primary():  # every process computed the results; process 0 writes them
    return results
  scores_path = os.path.join(workdir, "scores.npz")
  with atomic_write(scores_path, "wb") as f:
    np.savez(f, is_anomaly=data.test_is_anomaly,
             **{f"score_{m}": s for m, s in scores_test.items()},
             **({"group": data.test_group} if data.test_group is not None else {}), **con_scores)
  log_prob_fns: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
      name: (lambda x, v=v: log_prob(v, np.asarray(x, np.float32))) for name, v in variables.items()}
  results.update(task.analyze(config, workdir, data, log_prob_fns, results))
  run.writer.write_hparams(_hparams(config), {f"{metric}/{m}": v for metric in metrics.METRICS
                                              for m, v in results[metric].items()})
  write_json_atomic(os.path.join(workdir, "results.json"), results)
  return results
