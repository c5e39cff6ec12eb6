"""A vmapped sweep (N models in one program) equals N separate runs; declared sweeps."""
import gc
import json
import os
import weakref

import numpy as np
import pytest

from cnf_jax.experiments import config_lib
from cnf_jax.experiments import experiment
from cnf_jax.experiments import sweep
from cnf_jax.errors import UserInputError

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


def _module(name):
  return config_lib.load_config_module(os.path.join(CONFIGS, f"{name}.py"))


def _toy2d(seed, steps=30):
  c = _module("toy2d").get_config("runlocal")
  # Four models per run (flow, eps_probe, cf, oe); eps_auto gives each run its own clamp eps,
  # so the test also covers a per-model eps inside the shared program, and oe fine-tunes
  # each run's own flow (per-model initial parameters). knn: a baseline in the sweep's scoring.
  c.methods, c.seed, c.train.steps, c.train.oe_steps = "cf,flow,oe,knn", seed, steps, 20
  c.objective.eps_auto = True
  return c


def test_vmapped_sweep_equals_separate_runs(tmp_path):
  seeds = (0, 1)
  separate = [experiment.train_and_evaluate(_toy2d(s), str(tmp_path / f"separate{s}")) for s in seeds]
  vmapped = sweep.train_and_evaluate_many([_toy2d(s) for s in seeds], [str(tmp_path / f"vmap{s}") for s in seeds])
  for s, a, b in zip(seeds, separate, vmapped):
    assert b["auroc"] == pytest.approx(a["auroc"], abs=1e-4)
    assert b["eps"] == pytest.approx(a["eps"], abs=1e-4)
    scores_a = np.load(tmp_path / f"separate{s}" / "scores.npz")
    scores_b = np.load(tmp_path / f"vmap{s}" / "scores.npz")
    for key in ("score_cf", "score_flow", "score_oe", "score_knn"):
      np.testing.assert_allclose(scores_b[key], scores_a[key], rtol=1e-4, atol=1e-4)
    lines = lambda d: [json.loads(l) for l in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
    la, lb = lines(f"separate{s}"), lines(f"vmap{s}")
    assert [(l["model"], l["step"]) for l in la] == [(l["model"], l["step"]) for l in lb]
    np.testing.assert_allclose([l["loss"] for l in lb], [l["loss"] for l in la], rtol=1e-4, atol=1e-4)
  # The two models really are different models (different seeds, data and eps).
  assert vmapped[0]["eps"] != pytest.approx(vmapped[1]["eps"], abs=1e-3)
  assert not np.allclose(np.load(tmp_path / "vmap0" / "scores.npz")["score_cf"][:10],
                         np.load(tmp_path / "vmap1" / "scores.npz")["score_cf"][:10])
  # Each run's checkpoints are the separate run's: `cnf_jax.main` on a vmapped workdir resumes at the end.
  again = experiment.train_and_evaluate(_toy2d(1), str(tmp_path / "vmap1"))
  assert again["auroc"] == vmapped[1]["auroc"]


def test_runs_that_differ_in_hyperparameters_are_grouped_apart():
  configs = [_toy2d(0), _toy2d(1), _toy2d(0)]
  configs[2].train.lr = 1e-3
  assert sweep.group_runs(configs) == [[0, 1], [2]]
  with pytest.raises(UserInputError, match="differ in train"):
    sweep.check_shared(configs)


def test_declared_sweeps():
  runs = config_lib.declared_sweep(_module("oneclass"))
  assert len(runs) == 30 and len({r.name for r in runs}) == 30
  deer = next(r for r in runs if r.name == "deer-seed=2")
  config = deer.config(_module("oneclass"), "runlocal")
  assert (config.data.inlier_class, config.seed, config.train.steps) == ("deer", 2, 40)
  assert deer.flags("configs/oneclass.py", "runlocal") == ["--config=configs/oneclass.py:deer,runlocal",
                                                           "--config.seed=2"]
  # The ten classes x three seeds differ only in data and seed: one program.
  assert sweep.group_runs([r.config(_module("oneclass"), "runlocal") for r in runs]) == [list(range(30))]
  # Under ",raw" each class also has its own baseline knobs and CF eps: still one program, since
  # baselines are fitted per run after training and eps is an argument of the vmapped step.
  raw = [r.config(_module("oneclass"), "raw,runlocal") for r in runs]
  assert len({(c.baselines.knn_k, c.objective.eps) for c in raw}) > 1
  assert sweep.group_runs(raw) == [list(range(30))]


def test_declared_sweep_errors():
  class Dup:
    @staticmethod
    def sweep(add):
      add(seed=1)
      add(seed=1)
  with pytest.raises(UserInputError, match="same run twice: seed=1"):
    config_lib.declared_sweep(Dup, "dup.py")
  with pytest.raises(UserInputError, match="declares no sweep"):
    config_lib.declared_sweep(object(), "x.py")
  with pytest.raises(UserInputError, match="unknown config key 'train.stepz'"):
    config_lib.SweepRun("", {"train.stepz": 3}).config(_module("toy2d"))


def _toy2d_fixed_eps(eps, steps=20):
  c = _module("toy2d").get_config("runlocal")
  c.methods, c.train.steps, c.objective.eps_auto, c.objective.eps = "cf", steps, False, eps
  return c


def test_fixed_eps_may_differ_within_one_program(tmp_path, monkeypatch):
  """objective.eps is a per-run key: the eps ablation trains every fixed eps as one program."""
  eps = (-4.0, -1.0)
  assert sweep.group_runs([_toy2d_fixed_eps(e) for e in eps]) == [[0, 1]]
  separate = [experiment.train_and_evaluate(_toy2d_fixed_eps(e), str(tmp_path / f"s{i}")) for i, e in enumerate(eps)]
  # The two runs load equal data: the program keeps one copy of each array (read-only).
  monkeypatch.setattr(experiment, "SHARE_MIN_BYTES", 0)
  prepared, real_share = [], experiment.share_arrays
  monkeypatch.setattr(experiment, "share_arrays", lambda run, shared: prepared.append(real_share(run, shared)) or prepared[-1])
  vmapped = sweep.train_and_evaluate_many([_toy2d_fixed_eps(e) for e in eps], [str(tmp_path / f"v{i}") for i in range(2)])
  a, b = prepared
  for get in (lambda r: r.data.inliers, lambda r: r.data.test, lambda r: r.data.contrastive,
              lambda r: r.fit_data.inliers, lambda r: r.fit_data.contrastive):
    assert get(a) is get(b) and not get(a).flags.writeable
  for i, (e, a, b) in enumerate(zip(eps, separate, vmapped)):
    assert a["eps"] == b["eps"] == e
    assert b["auroc"] == pytest.approx(a["auroc"], abs=1e-4)
    np.testing.assert_allclose(np.load(tmp_path / f"v{i}" / "scores.npz")["score_cf"],
                               np.load(tmp_path / f"s{i}" / "scores.npz")["score_cf"], rtol=1e-4, atol=1e-4)
  # Same seed and data: only eps differs, and it changes the trained model.
  assert not np.allclose(np.load(tmp_path / "v0" / "scores.npz")["score_cf"],
                         np.load(tmp_path / "v1" / "scores.npz")["score_cf"])
  # Other objective keys still split groups, and the error names the key.
  other = _toy2d_fixed_eps(-1.0)
  other.objective.eps_quantile = 0.2
  with pytest.raises(UserInputError, match="differ in objective.eps_quantile"):
    sweep.check_shared([_toy2d_fixed_eps(-4.0), other])


def _toy2d_baselines(seed):
  c = _module("toy2d").get_config("runlocal")
  c.methods, c.seed = "knn,kde", seed
  return c


def test_a_sweep_of_baselines_only_holds_one_run_in_memory_at_a_time(tmp_path, monkeypatch):
  """No program is shared when no flow trains, so the vmapped path loads, scores and releases
  each run in turn (holding every run's data at once took raw 1,280-d CIFAR-10 past 7.5 GB)."""
  seeds = (0, 1, 2)
  separate = [experiment.train_and_evaluate(_toy2d_baselines(s), str(tmp_path / f"s{s}")) for s in seeds]
  loaded, live_at_scoring = [], []   # weak references to every Run prepared
  real_prepare, real_evaluate = experiment.prepare_run, experiment.evaluate_and_write

  def prepare(config, workdir):
    run = real_prepare(config, workdir)
    loaded.append(weakref.ref(run))
    return run

  def evaluate(run, variables, eps):
    gc.collect()
    live_at_scoring.append(sum(ref() is not None for ref in loaded))
    return real_evaluate(run, variables, eps)

  monkeypatch.setattr(experiment, "prepare_run", prepare)
  monkeypatch.setattr(experiment, "evaluate_and_write", evaluate)
  swept = sweep.train_and_evaluate_many([_toy2d_baselines(s) for s in seeds], [str(tmp_path / f"v{s}") for s in seeds])
  assert live_at_scoring == [1, 1, 1]
  for s, a, b in zip(seeds, separate, swept):
    assert b["auroc"] == a["auroc"]
    for key in ("score_knn", "score_kde"):
      np.testing.assert_array_equal(np.load(tmp_path / f"v{s}" / "scores.npz")[key],
                                    np.load(tmp_path / f"s{s}" / "scores.npz")[key])
  # A sweep that trains flows loads every run before the shared program starts.
  trained, real_train = [], experiment.train_models
  monkeypatch.setattr(experiment, "train_models", lambda runs: trained.append(len(runs)) or real_train(runs))
  flows = [_toy2d_baselines(s) for s in seeds[:2]]
  for c in flows:
    c.methods, c.train.steps = "flow,knn", 5
  sweep.train_and_evaluate_many(flows, [str(tmp_path / f"f{s}") for s in seeds[:2]])
  assert trained == [2]


@pytest.mark.parametrize("methods", ["knn,kde", "flow,knn"])
def test_sigterm_stops_a_sweep_between_runs_and_a_rerun_finishes_the_rest(tmp_path, monkeypatch, methods):
  """After SIGTERM the sweep stops before its next run (one run's baselines can score for
  minutes), keeps the finished runs, and the rerun gives what an uninterrupted sweep gives."""
  from cnf_jax.training import preemption
  configs = [_toy2d_baselines(s) for s in (0, 1, 2)]
  for c in configs:
    c.methods, c.train.steps = methods, 5
  reference = sweep.train_and_evaluate_many(configs, [str(tmp_path / f"r{s}") for s in (0, 1, 2)])
  workdirs = [str(tmp_path / f"v{s}") for s in (0, 1, 2)]
  real_evaluate = experiment.evaluate_and_write

  def evaluate_then_sigterm(run, variables, eps):
    results = real_evaluate(run, variables, eps)
    preemption._requested.set()   # what the handler does when SIGTERM arrives while a run scores
    return results

  monkeypatch.setattr(experiment, "evaluate_and_write", evaluate_then_sigterm)
  try:
    with pytest.raises(preemption.Preempted, match="stopped by SIGTERM after 1 of 3 runs"):
      sweep.train_and_evaluate_many(configs, workdirs)
  finally:
    preemption._requested.clear()
  assert [os.path.exists(os.path.join(w, "results.json")) for w in workdirs] == [True, False, False]
  monkeypatch.setattr(experiment, "evaluate_and_write", real_evaluate)
  resumed = sweep.train_and_evaluate_many(configs, workdirs)
  assert [r["auroc"] for r in resumed] == [r["auroc"] for r in reference]


def test_shared_arrays_keep_one_copy_of_equal_contents_only():
  shared = experiment.SharedArrays()
  x = np.arange(2 ** 18, dtype=np.float32).reshape(-1, 64)   # 1 MiB
  same, other = x.copy(), x.copy()
  other[-1, -1] += 1
  assert shared.share(x) is x and x.flags.writeable        # the first copy is kept as it is
  assert shared.share(same) is x and not x.flags.writeable  # an equal one is replaced, and then read-only
  assert shared.share(other) is other                       # one different value: its own array
  assert shared.share(x.astype(np.float64)) is not x        # same values, other dtype
  small = np.zeros(3)
  assert shared.share(small) is small and shared.share(small.copy()) is not small   # under SHARE_MIN_BYTES
  assert shared.share(None) is None
