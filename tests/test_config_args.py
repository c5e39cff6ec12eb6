"""What every config's documented `get_config(arg)` args set."""
import json
import os
import re

import pytest

from cnf_jax.experiments import config_lib
from conftest import CONFIGS

SNAPSHOT = os.path.join(os.path.dirname(__file__), "config_args_snapshot.json")


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
