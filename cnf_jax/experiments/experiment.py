"""One experiment: train the flows the chosen methods need, score the test set, write results.

Models (each a flow of the same architecture, checkpointed under
<workdir>/checkpoints/<name>):
  flow              maximum likelihood on inliers             (methods flow, flow_ratio)
  contrastive_flow  maximum likelihood on the contrastive set (method flow_ratio)
  eps_probe         maximum likelihood on inliers minus a held-out part, sets auto eps
  cf                the contrastive objective, eq. 3 with clamp eps (method cf)
  oe                `flow` fine-tuned with outlier exposure for train.oe_steps (method oe)

The baselines of cnf_jax/baselines.py (mse, knn, ...) train no model: they are
fitted on the preprocessed inliers (and contrastive data) when the run is scored.

Outputs in <workdir>: config.json, metrics.jsonl, scores.npz, results.json
(written last and atomically: its presence means the run finished).
"""
import dataclasses
import json
import logging
import os
from typing import Callable, Dict, List, Tuple

import ml_collections
import numpy as np

from cnf_jax.experiments import ablation
from cnf_jax.evaluation import baselines
from cnf_jax.experiments import config_lib
from cnf_jax.evaluation import metrics
from cnf_jax.training import objectives
from cnf_jax.data import preprocessing
from cnf_jax import tasks
from cnf_jax.data import task_data
from cnf_jax.errors import UserInputError
from cnf_jax.flows import flow_from_config
from cnf_jax.training.train import MetricsWriter, Objective, fit_flow, is_primary

logger = logging.getLogger(__name__)

# Each model gets its own seed stream: seed * 100 + offset.
MODEL_SEED_OFFSET = {"flow": 1, "contrastive_flow": 2, "eps_probe": 3, "cf": 4, "oe": 5}
# Methods whose models train on the contrastive data.
CONTRASTIVE_METHODS = ("cf", "flow_ratio", "oe")
# Config sections that define the trained models; a workdir refuses to resume
# with different values.
IDENTITY_KEYS = ("task", "seed", "data", "preprocess", "flow", "objective")


def models_needed(methods, eps_auto: bool, eps_holdout: float) -> List[str]:
  """Model names to train, in training order."""
  names = []
  if ("flow" in methods or "flow_ratio" in methods or "oe" in methods
      or ("cf" in methods and eps_auto and eps_holdout == 0)):
    names.append("flow")
  if "flow_ratio" in methods:
    names.append("contrastive_flow")
  if "cf" in methods:
    if eps_auto and eps_holdout > 0:
      names.append("eps_probe")
    names.append("cf")
  if "oe" in methods:
    names.append("oe")  # fine-tunes the trained "flow".
  return names


def model_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """The config model `name` trains with: the run's, with train.steps = train.oe_steps for 'oe'."""
  if name != "oe":
    return config
  c = ml_collections.ConfigDict(config.to_dict())
  c.train.steps = config.train.oe_steps
  return c


def initial_variables(name: str, trained: Dict[str, dict]):
  """The variables model `name` starts from: the trained flow for 'oe' (fine-tuning), else None."""
  return trained["flow"] if name == "oe" else None


def write_json_atomic(path: str, obj) -> None:
  """Writes JSON to a temp file and renames it, so readers never see half a file."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def _identity(config: ml_collections.ConfigDict, dim: int) -> dict:
  d = json.loads(config.to_json())
  out = {k: d.get(k) for k in IDENTITY_KEYS}
  out["feature_dim"] = dim
  return out


def check_workdir(workdir: str, config: ml_collections.ConfigDict, dim: int, preprocess_stats: dict) -> None:
  """Refuses a workdir that holds a run of another model; records this run's identity otherwise.

  Also writes config.json and preprocessing.json (what `cnf_jax.score` applies to new inputs).
  """
  try:
    os.makedirs(workdir, exist_ok=True)
  except (FileExistsError, NotADirectoryError, PermissionError) as e:
    raise UserInputError(f"--workdir {workdir} is not a usable directory ({e.strerror}); "
                         "choose another path") from None
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
  return {m: baseline[m] if m in baseline else metrics.anomaly_scores(m, log_p) for m in methods}


def _aurocs(scores: Dict[str, np.ndarray], is_anomaly: np.ndarray) -> Dict[str, float]:
  return {m: metrics.auroc(s, is_anomaly) for m, s in scores.items()}


@dataclasses.dataclass
class Run:
  """One experiment after loading: what its models are trained on and how they are scored.

  Attributes:
    data: the preprocessed TaskData (inliers [N, D], contrastive [M, D], test [T, D], ...).
    model: the Flow every model of the run uses.
    log_prob: log_prob(variables, x [N, D]) -> [N], compiled once per architecture.
    model_names: the models to train, in order (see `models_needed`).
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


def prepare_run(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Validates the config, loads and preprocesses the data, claims the workdir."""
  config_lib.validate(config)
  task = tasks.get(config.task)
  methods = config_lib.method_list(config)
  needs_contrastive = any(m in CONTRASTIVE_METHODS or m in baselines.USES_CONTRASTIVE for m in methods)
  data = task_data.validate(task.load_data(config), needs_contrastive)
  data, stats = _preprocess(config, data)
  check_workdir(workdir, config, data.dim, stats)
  model = flow_from_config(config.flow, data.dim)
  oc = config.objective
  return Run(config=config, workdir=workdir, task=task, methods=methods, data=data, model=model,
             log_prob=metrics.make_log_prob_fn(model, config.eval.batch_size),
             writer=MetricsWriter(os.path.join(workdir, "metrics.jsonl")),
             model_names=models_needed(methods, oc.eps_auto, oc.eps_holdout))


def model_seed(config: ml_collections.ConfigDict, name: str) -> int:
  return config.seed * 100 + MODEL_SEED_OFFSET[name]


def model_inputs(run: Run, name: str, trained: Dict[str, dict]):
  """What model `name` trains on, given the models trained before it.

  Returns (inliers [N, D], contrastive [M, D] or None, Objective). For 'cf' the
  clamp eps comes from the config or, with eps_auto, from `trained['eps_probe']`
  (held-out inliers) or `trained['flow']` (training inliers).
  """
  data, oc = run.data, run.config.objective
  if name == "flow":
    return data.inliers, None, Objective("nll")
  if name == "contrastive_flow":
    if data.contrastive_permute:  # maximum likelihood on column-permuted inlier batches
      return data.inliers, None, Objective("nll", permute="inlier")
    return data.contrastive, None, Objective("nll")
  if name == "oe":
    return data.inliers, data.contrastive, Objective("oe", permute="contrastive" if data.contrastive_permute else "",
                                                     margin=oc.oe_margin, weight=oc.oe_weight)
  held, kept = _probe_split(run)
  if name == "eps_probe":
    return kept, None, Objective("nll")
  if name == "cf":
    if oc.eps_auto and "eps_probe" in trained:
      eps = objectives.auto_eps(run.log_prob(trained["eps_probe"], held), oc.eps_quantile, oc.eps_offset)
    elif oc.eps_auto:  # eps_holdout == 0: quantile on the training inliers.
      eps = objectives.auto_eps(run.log_prob(trained["flow"], data.inliers), oc.eps_quantile, oc.eps_offset)
    else:
      eps = float(oc.eps)
    logger.info("contrastive flow: clamp eps = %.4g", eps)
    return data.inliers, data.contrastive, Objective("contrastive", eps,
                                                     "contrastive" if data.contrastive_permute else "")
  raise ValueError(f"unknown model {name!r}")


def model_mixtures(run: Run, name: str) -> Dict[str, object]:
  """{batch key: Mixture} of model `name`: the contrastive set's mixture, where the model draws from it."""
  mix = run.data.contrastive_mixture
  if mix is None:
    return {}
  return {"cf": {"contrastive": mix}, "oe": {"contrastive": mix}, "contrastive_flow": {"inlier": mix}}.get(name, {})


def _probe_split(run: Run):
  """(held-out inliers, kept inliers) for the eps probe; a fixed permutation per seed."""
  oc, inliers = run.config.objective, run.data.inliers
  if not (oc.eps_auto and oc.eps_holdout > 0):
    return None, inliers
  perm = np.random.default_rng([run.config.seed, 7]).permutation(len(inliers))
  n_held = max(1, int(round(oc.eps_holdout * len(inliers))))
  if n_held >= len(inliers):
    raise UserInputError(f"objective.eps_holdout={oc.eps_holdout} leaves no inliers to train the eps probe")
  return inliers[perm[:n_held]], inliers[perm[n_held:]]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs the experiment `config` in `workdir` (resuming what is there); returns the results dict."""
  run = prepare_run(config, workdir)
  variables, eps = {}, None
  for name in run.model_names:
    x, contrastive, objective = model_inputs(run, name, variables)
    if name == "cf":
      eps = objective.eps
    variables[name] = fit_flow(name, run.model, model_config(config, name), x, contrastive, objective, workdir,
                               model_seed(config, name), run.writer, model_mixtures(run, name),
                               initial_variables(name, variables))
  return evaluate_and_write(run, variables, eps)


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
  baseline_scores, baseline_seconds = baselines.score_sets(
      [m for m in methods if m in baselines.NAMES], data.inliers, data.contrastive, sets,
      config.baselines, config.seed)
  scores_test = _method_scores(methods, log_p_test, baseline_scores[("test",)])
  results = {
      "task": config.task,
      "methods": list(methods),
      "auroc": _aurocs(scores_test, data.test_is_anomaly),
      "feature_dim": data.dim,
      "num_inliers": len(data.inliers),
      "num_contrastive": 0 if data.contrastive is None else len(data.contrastive),
      "num_test": len(data.test),
      "num_test_anomalies": int(data.test_is_anomaly.sum()),
      "steps": config.train.steps,
  }
  if eps is not None:
    results["eps"] = eps
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
  results.update(ablation.contrastive_record(run, model_seed))
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
  with open(scores_path + ".tmp", "wb") as f:
    np.savez(f, is_anomaly=data.test_is_anomaly,
             **{f"score_{m}": s for m, s in scores_test.items()},
             **({"group": data.test_group} if data.test_group is not None else {}), **con_scores)
  os.replace(scores_path + ".tmp", scores_path)
  log_prob_fns: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
      name: (lambda x, v=v: log_prob(v, np.asarray(x, np.float32))) for name, v in variables.items()}
  results.update(task.analyze(config, workdir, data, log_prob_fns, results))
  write_json_atomic(os.path.join(workdir, "results.json"), results)
  return results
