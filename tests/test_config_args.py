"""config_lib.parse_arg (the typed `get_config(arg)` string) and what every config's documented args set."""
import json
import os
import re

import pytest

from cnf_jax.experiments import config_lib
from cnf_jax.errors import UserInputError
from conftest import CONFIGS

SNAPSHOT = os.path.join(os.path.dirname(__file__), "config_args_snapshot.json")
CLASSES = ("cat", "deer", "horse")


def _parse(arg, **defaults):
  return config_lib.parse_arg(arg, "/somewhere/configs/demo.py", **defaults)


def _error(arg, **defaults):
  with pytest.raises(UserInputError) as e:
    _parse(arg, **defaults)
  return str(e.value)


def _class_slot(**kw):
  return config_lib.Positional("inlier_class", CLASSES, needs="exactly one class, e.g. ':deer'", **kw)


# ---- parse_arg ----------------------------------------------------------------------------------

def test_values_are_converted_to_the_type_of_their_default():
  arg = _parse("steps=10,lr=1,name=x y,flag=false", steps=1, lr=0.5, name="a", flag=True, runlocal=False)
  assert arg.to_dict() == {"steps": 10, "lr": 1.0, "name": "x y", "flag": False, "runlocal": False}
  assert type(arg.steps) is int and type(arg.lr) is float


@pytest.mark.parametrize("arg", [None, "", " ", ",,"])
def test_no_arg_gives_the_defaults(arg):
  assert _parse(arg, steps=3, runlocal=False).to_dict() == {"steps": 3, "runlocal": False}


@pytest.mark.parametrize("arg,expected", [
    ("runlocal", True), (" runlocal ,", True), ("runlocal=true", True), ("runlocal=True", True),
    ("runlocal=1", True), ("runlocal=false", False), ("runlocal=0", False)])
def test_a_bare_word_sets_a_bool_key_true(arg, expected):
  assert _parse(arg, runlocal=False).runlocal is expected


@pytest.mark.parametrize("arg,defaults,message", [
    ("steps=1.5", dict(steps=1), "configs/demo.py: steps='1.5' is not an integer"),
    ("lr=fast", dict(lr=0.1), "configs/demo.py: lr='fast' is not a number"),
    ("runlocal=yes", dict(runlocal=False), "configs/demo.py: runlocal='yes' is not true or false"),
    ("steps", dict(steps=1), "configs/demo.py: steps needs a value, e.g. steps=1"),
    ("steps=1,steps=2", dict(steps=1), "configs/demo.py: argument 'steps' is given twice in 'steps=1,steps=2'"),
    ("runlocal,runlocal", dict(runlocal=False),
     "configs/demo.py: argument 'runlocal' is given twice in 'runlocal,runlocal'"),
])
def test_bad_values_name_the_config_and_the_key(arg, defaults, message):
  assert _error(arg, **defaults) == message


def test_unknown_words_and_keys_are_listed_with_the_valid_ones():
  message = _error("runlokal,stepz=3", steps=1, runlocal=False, positional=_class_slot(default="deer"))
  assert message == ("configs/demo.py: unknown argument(s) 'runlokal', 'stepz=3'; "
                     "valid: cat, deer, horse, steps=<an integer>, runlocal")
  # A positional word is a bare word, not a key.
  assert "unknown argument(s) 'deer=1'" in _error("deer=1", positional=_class_slot())


def test_the_positional_slot_takes_one_of_its_choices():
  arg = _parse("runlocal,horse", runlocal=False, positional=_class_slot())
  assert arg.to_dict() == {"runlocal": True, "inlier_class": "horse"}
  assert _error("runlocal", runlocal=False, positional=_class_slot()) == (
      "configs/demo.py needs exactly one class, e.g. ':deer'; got none; choose from cat, deer, horse")
  assert _error("cat,deer", positional=_class_slot()) == (
      "configs/demo.py needs exactly one class, e.g. ':deer'; got 'cat', 'deer'; choose from cat, deer, horse")
  assert _error("dog", positional=_class_slot()) == "configs/demo.py: unknown argument(s) 'dog'; valid: cat, deer, horse"


def test_a_positional_slot_with_a_default_may_be_left_out():
  assert _parse("", positional=_class_slot(default="horse")).inlier_class == "horse"
  assert _parse("cat", positional=_class_slot(default="horse")).inlier_class == "cat"


def test_a_positional_slot_of_many_words_keeps_their_order():
  slot = config_lib.Positional("datasets", ("cifar100", "svhn", "celeba"), needs="the anomaly dataset(s)", many=True)
  assert _parse("celeba,runlocal,svhn", runlocal=False, positional=slot).datasets == ("celeba", "svhn")
  assert "needs the anomaly dataset(s); got none" in _error("runlocal", runlocal=False, positional=slot)
  assert "argument 'svhn' is given twice" in _error("svhn,svhn", positional=slot)


@pytest.mark.parametrize("text,value", [("0", 0.0), ("1", 1.0), ("0.25", 0.25), (".5", 0.5), ("1e-1", 0.1)])
def test_a_fraction_takes_the_closed_unit_interval(text, value):
  arg = _parse(f"d={text}", d=config_lib.fraction(0.1, "the fraction of inlier data"))
  assert arg.d == value and type(arg.d) is float


def test_a_fraction_default_is_a_float():
  assert type(_parse("", d=config_lib.fraction(0, "the fraction of inlier data")).d) is float


@pytest.mark.parametrize("text,message", [
    ("1.5", "configs/demo.py: d=1.5 must be in [0, 1] (the fraction of inlier data)"),
    ("-0.1", "configs/demo.py: d=-0.1 must be in [0, 1] (the fraction of inlier data)"),
    ("nan", "configs/demo.py: d=nan must be in [0, 1] (the fraction of inlier data)"),
    ("x", "configs/demo.py: d='x' is not a number in [0, 1]"),
])
def test_a_fraction_outside_the_unit_interval_is_an_error(text, message):
  assert _error(f"d={text}", d=config_lib.fraction(0.1, "the fraction of inlier data")) == message


def test_a_range_has_its_own_bounds():
  spec = config_lib.Range(5.0, 1.0, 10.0)
  assert _parse("scale=10", scale=spec).scale == 10.0
  assert _error("scale=0.5", scale=spec) == "configs/demo.py: scale=0.5 must be in [1, 10]"
  assert "valid: scale=<a number in [1, 10]>" in _error("x", scale=spec)


def test_mistakes_in_the_declaration_are_programming_errors():
  with pytest.raises(TypeError, match="hidden=.*give a bool, int, float, str or Range"):
    _parse("", hidden=(1, 2))
  with pytest.raises(TypeError, match="positional 'inlier_class' is also a key=value default"):
    _parse("", inlier_class="deer", positional=_class_slot())


def test_errors_name_the_config_file_as_the_user_types_it():
  assert config_lib.config_file_name("/a/b/configs/oneclass.py") == "configs/oneclass.py"
  assert config_lib.config_file_name("configs/oneclass.py") == "configs/oneclass.py"
  assert _error("x").startswith("configs/demo.py: unknown argument(s) 'x'")


# ---- every config -------------------------------------------------------------------------------

def _module(name):
  return config_lib.load_config_module(os.path.join(CONFIGS, f"{name}.py"))


def _flat(c, prefix=""):
  """{'train.steps': 40, 'flow.hidden': [32, 32], ...}: leaves by dotted key, tuples as JSON lists."""
  out = {}
  for k, v in c.items():
    if hasattr(v, "items"):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = list(v) if isinstance(v, tuple) else v
  return out


def _snapshot():
  with open(SNAPSHOT) as f:
    return {name: entry for name, entry in json.load(f).items() if name != "about"}


def _documented_args(name):
  """The args of the docstring's example commands and of sweep(add), without the base arg."""
  path = os.path.join(CONFIGS, f"{name}.py")
  with open(path) as f:
    doc = f.read().split('"""')[1]
  args = [a for a in re.findall(rf"configs/{name}\.py:(\S+)", doc) if "<" not in a]
  return set(args + [run.arg for run in config_lib.declared_sweep(_module(name))])


SNAPSHOT_CASES = [(name, arg) for name, entry in sorted(_snapshot().items()) for arg in entry["changes"]]


@pytest.mark.parametrize("name,arg", SNAPSHOT_CASES)
def test_documented_args_set_what_the_hand_written_parsing_set(name, arg):
  """Each arg changes exactly the keys it changed before typed parse_arg, to the same values.

  config_args_snapshot.json holds, per config, its base arg, the base config's values of every key
  an arg moves, and each documented arg's difference from the base (made by the old code).
  """
  entry = _snapshot()[name]
  base = _flat(_module(name).get_config(entry["base"]))
  assert {k: base[k] for k in entry["base_values"]} == entry["base_values"]
  config = _flat(_module(name).get_config(arg))
  assert set(config) == set(base)
  assert {k: v for k, v in config.items() if v != base[k]} == entry["changes"][arg]


@pytest.mark.parametrize("name", sorted(_snapshot()))
def test_runlocal_shrinks_every_sweep_run_as_it_shrinks_the_base(name):
  """`--arg=runlocal` of a sweep: each run's arg + runlocal is that run's config with runlocal's changes."""
  entry = _snapshot()[name]
  runlocal = entry["changes"][config_lib.join_arg(entry["base"], "runlocal")]
  module = _module(name)
  for run in config_lib.declared_sweep(module):
    full = _flat(module.get_config(run.arg))
    assert _flat(module.get_config(config_lib.join_arg(run.arg, "runlocal"))) == {**full, **runlocal}, run.arg


@pytest.mark.parametrize("name", sorted(_snapshot()))
def test_the_snapshot_holds_every_documented_arg(name):
  entry = _snapshot()[name]
  assert _documented_args(name) - {entry["base"]} <= set(entry["changes"])


@pytest.mark.parametrize("name", sorted(_snapshot()))
def test_every_config_rejects_a_key_it_does_not_declare(name):
  """Before typed parse_arg, most configs ignored key=value pairs they did not read."""
  arg = config_lib.join_arg(_snapshot()[name]["base"], "steps=10")
  with pytest.raises(UserInputError, match=rf"^configs/{name}\.py: unknown argument\(s\) 'steps=10'; valid: .*runlocal"):
    _module(name).get_config(arg)


@pytest.mark.parametrize("name,arg,message", [
    # Classes of the ablations are checked by their own config, not by oneclass.py.
    ("contamination", "dear,d=0.5", "configs/contamination.py: unknown argument(s) 'dear'; valid: airplane, "),
    ("contamination", "deer,cat", "configs/contamination.py needs at most one CIFAR-10 class (default horse)"),
    ("eps_ablation", "dear", "configs/eps_ablation.py: unknown argument(s) 'dear'"),
    ("narrow", "ratio=2", "configs/narrow.py: ratio=2.0 must be in [0, 1] (the fraction of Tiny ImageNet)"),
    ("narrow", "ratio=x", "configs/narrow.py: ratio='x' is not a number in [0, 1]"),
    ("dataset_vs_dataset", "svhn,svhn", "configs/dataset_vs_dataset.py: argument 'svhn' is given twice"),
    ("celeba", "female,male", "configs/celeba.py needs the inlier side, ':female' or ':male'; got 'female', 'male'"),
    # The label-free choices are the default; 'paper' gives the paper's settings back, 'chosen' is the old word.
    ("oneclass", "deer,paper,chosen", "the config words 'paper' and 'chosen' exclude each other"),
    ("celeba", "male,chosen,paper", "the config words 'paper' and 'chosen' exclude each other"),
])
def test_config_arg_errors(name, arg, message):
  with pytest.raises(UserInputError) as e:
    _module(name).get_config(arg)
  assert str(e.value).startswith(message)


def test_dataset_vs_dataset_keeps_the_order_of_its_datasets():
  assert _module("dataset_vs_dataset").get_config("celeba,svhn").data.anomaly_sources == "celeb_a,svhn_cropped"


def test_raw_sets_each_classes_chosen_knobs_and_paper_keeps_pyods():
  """',raw' is Table 1 on Lite0's raw features (benchmarks/results/table1/effnet_lite0) in one word."""
  oneclass = _module("oneclass")
  chosen = {name: oneclass.get_config(f"{name},raw").baselines for name in ("airplane", "bird", "cat", "frog", "truck")}
  chosen_methods = oneclass.get_config("cat,raw").methods.split(",")
  assert {n: (b.knn_k, b.lof_k, b.abod_k, b.kde_bandwidth) for n, b in chosen.items()} == {
      "airplane": (5, 500, 50, 0.1), "bird": (10, 200, 400, 0.1), "cat": (50, 500, 100, 0.25),
      "frog": (5, 50, 50, 0.1), "truck": (10, 500, 400, 0.25)}
  for table in (oneclass.RAW_KNN_K, oneclass.RAW_LOF_K, oneclass.RAW_KDE_BANDWIDTH, oneclass.RAW_ABOD_K,
                oneclass.RAW_CF_EPS):
    assert set(table) == set(oneclass.CIFAR10_CLASSES)
  # CF's eps per class on these features (benchmarks/results/cf_factors/eps_raw.py), 100 on PCA-128.
  assert {n: oneclass.get_config(f"{n},raw").objective.eps for n in ("airplane", "cat", "deer")} == {
      "airplane": 1500.0, "cat": 1000.0, "deer": 1500.0}
  assert oneclass.get_config("cat,chosen").objective.eps == 100.0
  paper = oneclass.get_config("cat,raw,paper")
  assert (paper.data.backbone, paper.objective.oe_margin, paper.objective.eps) == ("effnet_lite0", 1280.0, 0.0)
  assert (paper.baselines.knn_k, paper.baselines.lof_k, paper.baselines.abod_k, paper.baselines.kde_bandwidth) == (5, 20, 5, 1.0)
  # runlocal keeps 450 training inliers: every neighbour count must fit them.
  local = oneclass.get_config("airplane,raw,runlocal")
  assert "mcd" in chosen_methods and "mcd" not in local.methods.split(",")   # MCD needs more inliers than features
  assert max(local.baselines.knn_k, local.baselines.lof_k, local.baselines.abod_k) <= 0.9 * local.data.train_limit
  with pytest.raises(UserInputError, match=r"configs/celeba\.py: unknown argument\(s\) 'raw'"):
    _module("celeba").get_config("male,raw")
