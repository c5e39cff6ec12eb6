"""Shared config defaults, the parsing of `get_config(arg)` strings, and config validation.

Experiment configs (`configs/*.py`) start from `default_config()` and change
what their experiment needs, so every run has the same, complete set of keys.
"""
import dataclasses
import math
import os
from typing import Dict, Optional, Sequence, Tuple, Union

import ml_collections

from cnf_jax.data import preprocessing
from cnf_jax.errors import UserInputError
from cnf_jax.evaluation import baselines
from cnf_jax.flows import BLOCK_TYPES
from cnf_jax.flows.allinone import CLAMP_ACTIVATIONS, GLOBAL_AFFINE_TYPES
from cnf_jax.flows.flow import COMPUTE_DTYPES
from cnf_jax.training import plan

# Methods scored with trained flows (their models: training/plan.py).
FLOW_METHODS = plan.FLOW_METHODS
# Every method a run can evaluate: the flows, then the classical baselines (evaluation/baselines.py).
METHODS = FLOW_METHODS + baselines.NAMES
SCHEDULES = ("cosine", "constant")
PARALLEL_MODES = ("data", "single")


def default_config() -> ml_collections.ConfigDict:
  """Every key a run reads, with defaults close to the paper's image set-up."""
  c = ml_collections.ConfigDict()
  c.task = ""
  c.seed = 0
  # Comma-separated: cf (contrastive flow), flow (maximum likelihood), flow_ratio
  # (log p_contrastive - log p_inlier, two flows), oe (the flow fine-tuned with outlier
  # exposure), and the baselines of cnf_jax/evaluation/baselines.py (mse, mse_ratio, kde, pca, knn,
  # lof, abod, mcd, pca_recon, kde_cv, and pyod:<Name> for an installed PyOD detector, e.g. pyod:IForest),
  # which are fitted and scored at evaluation, not trained.
  c.methods = "cf,flow,flow_ratio"

  c.data = ml_collections.ConfigDict()

  c.preprocess = ml_collections.ConfigDict()
  c.preprocess.normalize = "sphere"   # sphere | standardize | none
  c.preprocess.noise_std = 0.02       # Gaussian noise added to training batches.

  c.flow = ml_collections.ConfigDict()
  c.flow.block = "allinone"           # allinone | affine | spline
  c.flow.num_blocks = 8
  c.flow.hidden = (512, 512)          # conditioner hidden widths (its depth is len(hidden)).
  c.flow.zero_last = False            # zero-init the conditioner's last layer.
  # Conditioner matmuls: auto | float32 | bfloat16 (f32 accumulation; params stay f32). auto:
  # bfloat16 on a CPU with AMX-BF16 (1.6-2x faster training, AUROC within about 0.05: see
  # benchmarks/README.md), float32 on other CPUs (bf16 is slower there), GPUs and TPUs
  # (flows.resolve_compute_dtype). results.json records the dtype a run used.
  c.flow.compute_dtype = "auto"
  c.flow.clamp = 2.0                  # soft clamp alpha of the log-scales.
  c.flow.clamp_activation = "tanh"    # tanh (FrEIA 0.2) | tanh_scaled (FrEIA master)
  c.flow.global_affine_type = "SOFTPLUS"  # SOFTPLUS | SIGMOID | EXP
  c.flow.global_affine_init = 1.0
  c.flow.permute_soft = False         # random rotations instead of hard permutations.
  c.flow.reverse_permutation = False
  c.flow.spline_bins = 16
  c.flow.spline_bound = 5.0

  c.objective = ml_collections.ConfigDict()
  c.objective.eps = 0.0               # clamp threshold on contrastive log p (paper: 0).
  c.objective.eps_auto = False        # True: eps from a standard flow (quantile + offset).
  c.objective.eps_quantile = 0.1
  c.objective.eps_offset = math.log(10.0)
  # Fraction of inliers held out from the standard flow that sets auto eps; the
  # quantile is taken on them (training inliers overfit; 0 uses training inliers).
  c.objective.eps_holdout = 0.1
  # Outlier exposure (method oe, Hendrycks et al. 2019a): fine-tune the flow with
  #   mean(-log p(x_in)) + oe_weight * mean(relu(oe_margin + log p(x_out) - log p(x_in))).
  # Log-densities of 128-d features are sums over 128 dimensions (inliers of a CIFAR-10
  # class sit around log p = 200 with a spread of tens of nats), so the margin is in
  # total nats: 10 nats asks each contrastive point to be e^10 (~2e4) times less likely
  # than its paired inlier, about 0.08 nats per dimension. Weight 1: both terms are nats
  # per sample, so neither dominates by its units alone. Measured (oneclass deer, seed 0):
  # the flow already puts Tiny ImageNet ~94 nats below the inliers, only ~1% of pairs
  # violate a 10-nat margin, and OE equals Flow (AUROC .882 / .882); margin 100 gives .886.
  c.objective.oe_margin = 10.0
  c.objective.oe_weight = 1.0

  c.train = ml_collections.ConfigDict()
  c.train.steps = 3000
  c.train.batch_size = 256            # inliers per step.
  c.train.contrastive_batch_size = 256
  c.train.lr = 5e-4
  c.train.warmup_steps = 100
  c.train.schedule = "cosine"         # cosine | constant (both after linear warm-up)
  c.train.grad_clip = 10.0            # global-norm clipping; 0 disables.
  c.train.log_every = 100
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 2
  c.train.parallel = "data"           # data: shard batches over all local devices | single
  # Fine-tuning steps of the oe model, from the final flow parameters with a fresh Adam
  # state and its own warm-up + schedule over these steps (lr, batch sizes as above).
  c.train.oe_steps = 1000
  # Early stopping (off by default): hold out this fraction of the inliers and of the contrastive
  # rows; every eval_every steps (0: log_every) each model's own objective is computed on them
  # (noise-free); a model stops after `patience` evaluations without improvement and keeps its
  # best parameters. patience = 0 only records the criterion.
  c.train.validation_fraction = 0.0
  c.train.eval_every = 0
  c.train.patience = 0

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 4096

  # Options of the classical baselines (methods mse ... mcd), PyOD's defaults where it has one;
  # each key is documented in cnf_jax/evaluation/baselines.py:default_config.
  c.baselines = baselines.default_config()
  return c


# --- The `get_config(arg)` string, big_vision style ---------------------------------------------

@dataclasses.dataclass(frozen=True)
class Positional:
  """The bare-word slot of a config arg, e.g. the CIFAR-10 class of configs/oneclass.py:deer.

  name: the key of parse_arg's result that holds the word (a tuple of words if `many`).
  choices: the words allowed.
  needs: what the slot takes, for the error when too few or too many words are given,
    e.g. "exactly one CIFAR-10 class, e.g. ':deer'".
  default: the value when no word is given; None makes a word required.
  many: take one or more words (kept in the order given) instead of one.
  """
  name: str
  choices: Sequence[str]
  needs: str
  default: Optional[Union[str, Tuple[str, ...]]] = None
  many: bool = False


@dataclasses.dataclass(frozen=True)
class Range:
  """The default of a number key=value that must lie in [low, high]; `meaning` goes into the error."""
  default: float
  low: float
  high: float
  meaning: str = ""


def fraction(default: float, meaning: str) -> Range:
  """A key=value in [0, 1], e.g. d=fraction(0.1, "the fraction of inlier data")."""
  return Range(float(default), 0.0, 1.0, meaning)


def config_file_name(path: str) -> str:
  """'/repo/configs/oneclass.py' -> 'configs/oneclass.py': how errors name a config file."""
  path = os.path.abspath(path)
  return os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))


def _wanted(default) -> str:
  """What a key=value takes, for error messages: 'a number in [0, 1]', 'an integer', ..."""
  if isinstance(default, Range):
    return f"a number in [{default.low:g}, {default.high:g}]"
  return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[type(default)]


def _convert(config: str, key: str, text: str, default):
  """The string `text` of `key=text` as the type of `default` (a Range: a float in its range)."""
  try:
    if isinstance(default, bool):
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(text)
      return text.lower() in ("true", "1")
    if isinstance(default, Range):
      value = float(text)
    else:
      value = type(default)(text)
  except ValueError:
    raise UserInputError(f"{config}: {key}={text!r} is not {_wanted(default)}") from None
  # `not low <= value <= high` also rejects nan.
  if isinstance(default, Range) and not default.low <= value <= default.high:
    meaning = f" ({default.meaning})" if default.meaning else ""
    raise UserInputError(f"{config}: {key}={value} must be in [{default.low:g}, {default.high:g}]{meaning}")
  return value


def _positional_value(config: str, positional: Positional, words: Sequence[str]):
  """The value of the positional slot from its bare words (a tuple if positional.many)."""
  if not words and positional.default is not None:
    return positional.default
  if not words or (len(words) > 1 and not positional.many):
    got = ", ".join(map(repr, words)) or "none"
    raise UserInputError(f"{config} needs {positional.needs}; got {got}; choose from {', '.join(positional.choices)}")
  return tuple(words) if positional.many else words[0]


def parse_arg(arg: Optional[str], config_file: str, *, positional: Optional[Positional] = None,
              **defaults) -> ml_collections.ConfigDict:
  """Parses the `arg` of get_config(arg) against declared defaults, as big_vision's configs do.

    parse_arg("deer,runlocal", __file__, runlocal=False, positional=Positional("inlier_class", CLASSES, ...))
      -> ConfigDict(inlier_class="deer", runlocal=True)
    parse_arg("d=0.25", __file__, d=fraction(0.1, "the fraction of inlier data"), runlocal=False)
      -> ConfigDict(d=0.25, runlocal=False)

  `arg` is comma-separated. A bare word is a bool key (set to True) or a word of the
  positional slot; `key=value` is converted to the type of the key's default (bool: true,
  false, 1 or 0; int; float; str; a Range: a float within it). Keys not given keep their
  default. config_file (the config's __file__, or 'configs/<name>.py') names the config in
  the UserInputError raised for an unknown word or key, a value that does not convert or is
  out of range, an argument given twice and a wrong number of positional words; the error
  lists the valid arguments.
  """
  config = config_file_name(config_file)
  # Mistakes in the config file itself, not in the user's arg.
  for k, d in defaults.items():
    if not isinstance(d, (bool, int, float, str, Range)):
      raise TypeError(f"parse_arg default {k}={d!r}: give a bool, int, float, str or Range")
  if positional is not None and positional.name in defaults:
    raise TypeError(f"parse_arg positional {positional.name!r} is also a key=value default")
  values = {k: d.default if isinstance(d, Range) else d for k, d in defaults.items()}
  words, seen, unknown = [], set(), []
  for token in (arg or "").split(","):
    key, has_value, text = (part.strip() for part in token.partition("="))
    if not key and not has_value:
      continue  # empty parts (',,', a trailing comma) are allowed
    if key in seen:
      raise UserInputError(f"{config}: argument {key!r} is given twice in {arg!r}")
    seen.add(key)
    if key in defaults and (has_value or isinstance(defaults[key], bool)):
      values[key] = _convert(config, key, text, defaults[key]) if has_value else True
    elif key in defaults:
      raise UserInputError(f"{config}: {key} needs a value, e.g. {key}={values[key]}")
    elif positional is not None and not has_value and key in positional.choices:
      words.append(key)
    else:
      unknown.append(token.strip())
  if unknown:
    valid = list(positional.choices) if positional is not None else []
    valid += [k if isinstance(d, bool) else f"{k}=<{_wanted(d)}>" for k, d in defaults.items()]
    raise UserInputError(f"{config}: unknown argument(s) {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")
  if positional is not None:
    values[positional.name] = _positional_value(config, positional, words)
  return ml_collections.ConfigDict(values)


def apply_runlocal(c: ml_collections.ConfigDict) -> None:
  """Shrinks a config to a smoke test that runs in seconds on a CPU."""
  c.flow.num_blocks = min(c.flow.num_blocks, 2)
  c.flow.hidden = tuple(min(h, 32) for h in c.flow.hidden)
  c.train.steps = 40
  c.train.warmup_steps = 5
  c.train.batch_size = min(c.train.batch_size, 64)
  c.train.contrastive_batch_size = min(c.train.contrastive_batch_size, 64)
  c.train.log_every = 10
  c.train.checkpoint_every = 20
  c.train.oe_steps = 20


def method_list(c: ml_collections.ConfigDict) -> Tuple[str, ...]:
  return tuple(m.strip() for m in c.methods.split(",") if m.strip())


def _one_of(name, value, allowed):
  if value not in allowed:
    raise UserInputError(f"config {name}={value!r} is not valid; choose one of {', '.join(map(str, allowed))}")


def _positive(name, value, allow_zero=False):
  if value < 0 or (value == 0 and not allow_zero):
    raise UserInputError(f"config {name}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


def validate(c: ml_collections.ConfigDict) -> None:
  """Raises UserInputError for values no run can use; says which key and what is allowed."""
  methods = method_list(c)
  if not methods:
    raise UserInputError(f"config methods is empty; choose from {', '.join(METHODS)}")
  for m in methods:
    if m.startswith(baselines.PYOD_PREFIX):
      baselines.pyod_detector(m, c.seed)   # pyod installed, the class found and built
    elif m not in METHODS:
      raise UserInputError(f"config methods entry={m!r} is not valid; choose one of {', '.join(METHODS)}, "
                           "or pyod:<Name> for a PyOD detector (e.g. pyod:IForest)")
  _one_of("preprocess.normalize", c.preprocess.normalize, preprocessing.METHODS)
  _positive("preprocess.noise_std", c.preprocess.noise_std, allow_zero=True)
  _one_of("flow.block", c.flow.block, BLOCK_TYPES)
  _positive("flow.num_blocks", c.flow.num_blocks)
  for h in c.flow.hidden:
    _positive("flow.hidden entry", h)
  _one_of("flow.compute_dtype", c.flow.compute_dtype, COMPUTE_DTYPES)
  _positive("flow.clamp", c.flow.clamp)
  _one_of("flow.clamp_activation", c.flow.clamp_activation, CLAMP_ACTIVATIONS)
  _one_of("flow.global_affine_type", c.flow.global_affine_type, GLOBAL_AFFINE_TYPES)
  _positive("flow.global_affine_init", c.flow.global_affine_init)
  if c.flow.global_affine_type == "SIGMOID" and c.flow.global_affine_init >= 10:
    raise UserInputError("config flow.global_affine_init must be < 10 with SIGMOID (gamma = 10 sigmoid(.))")
  _positive("flow.spline_bins", c.flow.spline_bins)
  _positive("flow.spline_bound", c.flow.spline_bound)
  if not 0 <= c.objective.eps_quantile <= 1:
    raise UserInputError(f"config objective.eps_quantile={c.objective.eps_quantile} must be in [0, 1]")
  if not 0 <= c.objective.eps_holdout < 1:
    raise UserInputError(f"config objective.eps_holdout={c.objective.eps_holdout} must be in [0, 1)")
  for key in ("steps", "batch_size", "contrastive_batch_size", "log_every", "checkpoint_every",
              "keep_checkpoints"):
    _positive(f"train.{key}", c.train[key])
  _positive("train.lr", c.train.lr)
  _positive("train.warmup_steps", c.train.warmup_steps, allow_zero=True)
  _positive("train.grad_clip", c.train.grad_clip, allow_zero=True)
  _one_of("train.schedule", c.train.schedule, SCHEDULES)
  _one_of("train.parallel", c.train.parallel, PARALLEL_MODES)
  _positive("train.oe_steps", c.train.oe_steps)
  if not 0 <= c.train.validation_fraction < 1:
    raise UserInputError(f"config train.validation_fraction={c.train.validation_fraction} must be in [0, 1)")
  _positive("train.eval_every", c.train.eval_every, allow_zero=True)
  _positive("train.patience", c.train.patience, allow_zero=True)
  if c.train.patience and not c.train.validation_fraction:
    raise UserInputError("config train.patience > 0 needs held-out rows: set train.validation_fraction, e.g. 0.1")
  _positive("objective.oe_margin", c.objective.oe_margin, allow_zero=True)
  _positive("objective.oe_weight", c.objective.oe_weight, allow_zero=True)
  _positive("eval.batch_size", c.eval.batch_size)
  baselines.validate(c.baselines)


def flatten_keys(c: ml_collections.ConfigDict, prefix: str = "") -> Sequence[str]:
  """All leaf keys as dotted paths, e.g. 'train.steps'."""
  keys = []
  for k, v in c.items():
    path = f"{prefix}{k}"
    if isinstance(v, ml_collections.ConfigDict):
      keys.extend(flatten_keys(v, path + "."))
    else:
      keys.append(path)
  return keys


def check_override_key(c: ml_collections.ConfigDict, dotted: str) -> None:
  """Raises UserInputError listing the valid keys if `dotted` is not a key of `c`."""
  node = c
  parts = dotted.split(".")
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      where = ".".join(parts[:i]) or "the top level"
      valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      raise UserInputError(f"unknown config key '{dotted}': no '{part}' at {where}; "
                           f"valid keys there: {', '.join(valid)}")
    node = node[part]


# --- Config files and the sweeps declared next to them ------------------------------------------

def load_config_module(path: str):
  """Imports a config file (configs/<name>.py) as a module; UserInputError if it is missing."""
  import importlib.util
  if not os.path.isfile(path):
    raise UserInputError(f"config file {path!r} not found; give a path like configs/oneclass.py")
  # The module's __name__ names the file the user typed (e.g. "configs/oneclass.py"), as the
  # configs' parse_arg errors do, not an internal identifier.
  name = config_file_name(path)
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def set_dotted(c: ml_collections.ConfigDict, dotted: str, value) -> None:
  """c['a.b.c'] = value for an existing key (UserInputError listing valid keys otherwise)."""
  check_override_key(c, dotted)
  *parents, last = dotted.split(".")
  node = c
  for part in parents:
    node = node[part]
  node[last] = value


def join_arg(*args: str) -> str:
  """'deer' + 'runlocal' -> 'deer,runlocal' (empty parts dropped)."""
  return ",".join(a for a in args if a)


def format_value(value) -> str:
  """A config value as a --config.key=VALUE flag value (tuples without spaces)."""
  if isinstance(value, (tuple, list)):
    return "(" + ",".join(format_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
  return str(value)


def run_name(arg: str, overrides: Dict[str, object]) -> str:
  """A directory-safe name for one run of a sweep, e.g. 'deer-seed=1-train.lr=0.001'."""
  parts = [arg.replace(",", "_")] if arg else []
  parts += [f"{k}={format_value(v)}" for k, v in sorted(overrides.items())]
  name = "-".join(parts) or "default"
  return "".join(ch if ch.isalnum() or ch in "-_=.," else "_" for ch in name)


class SweepRun:
  """One run of a declared sweep: config arg plus overrides, and the name of its workdir."""

  def __init__(self, arg: str, overrides: Dict[str, object]):
    self.arg = arg
    self.overrides = dict(overrides)
    self.name = run_name(arg, self.overrides)

  def config(self, module, extra_arg: str = "") -> ml_collections.ConfigDict:
    """The run's config: module.get_config(arg + extra_arg) with the overrides applied."""
    c = module.get_config(join_arg(self.arg, extra_arg))
    for key, value in self.overrides.items():
      set_dotted(c, key, value)
    return c

  def flags(self, config_path: str, extra_arg: str = "") -> Sequence[str]:
    """The cnf_jax.main flags that select this run's config (no --workdir)."""
    arg = join_arg(self.arg, extra_arg)
    out = [f"--config={config_path}" + (f":{arg}" if arg else "")]
    out += [f"--config.{k}={format_value(v)}" for k, v in sorted(self.overrides.items())]
    return out

  def __repr__(self):
    return f"SweepRun({self.name!r})"


def declared_sweep(module, config_path: str = "") -> Sequence[SweepRun]:
  """The runs of `module.sweep(add)`, big_vision style: the config file declares its sweep.

  sweep(add) calls add(arg="deer", seed=1, **{"train.lr": 1e-3}) once per run;
  keys other than `arg` are dotted config keys.
  """
  if not hasattr(module, "sweep"):
    raise UserInputError(f"config {config_path or module.__name__} declares no sweep(add) function; "
                         "add one next to get_config (see configs/oneclass.py)")
  runs = []
  module.sweep(lambda arg="", **overrides: runs.append(SweepRun(arg, overrides)))
  names = [r.name for r in runs]
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise UserInputError(f"sweep of {config_path} declares the same run twice: {', '.join(duplicates)}")
  if not runs:
    raise UserInputError(f"sweep of {config_path} declares no runs")
  return runs


def parse_assignments(pairs: Sequence[str]) -> Dict[str, str]:
  """['data.path=/x.npz', 'train.steps=10'] -> {'data.path': '/x.npz', 'train.steps': '10'}."""
  out = {}
  for pair in pairs:
    key, sep, value = pair.partition("=")
    if not sep or not key.strip():
      raise UserInputError(f"--set {pair!r} is not KEY=VALUE; e.g. --set=data.path=/data/features.npz")
    out[key.strip()] = value.strip()
  return out


def set_from_string(c: ml_collections.ConfigDict, dotted: str, text: str) -> None:
  """Sets an existing key from a command-line string, typed like its current value."""
  import ast
  check_override_key(c, dotted)
  *parents, last = dotted.split(".")
  node = c
  for part in parents:
    node = node[part]
  current = node[last]
  try:
    if isinstance(current, bool):
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(text)
      value = text.lower() in ("true", "1")
    elif isinstance(current, (int, float)):
      value = type(current)(float(text) if isinstance(current, float) else int(text))
    elif isinstance(current, (tuple, list)):
      value = tuple(ast.literal_eval(text))
    else:
      value = text
  except (ValueError, SyntaxError):
    raise UserInputError(f"config {dotted}={text!r}: expected a {type(current).__name__} like {current!r}") from None
  node[last] = value
