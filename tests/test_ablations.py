"""Contrastive mixtures, column permutation, the ablation configs and the tabular task (paper 5.3, 5.4)."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from cnf_jax import report as report_cli
from cnf_jax.reports import ablations
from cnf_jax.experiments import config_lib
from cnf_jax.evaluation import metrics
from cnf_jax.experiments import experiment
from cnf_jax.experiments import sweep
from cnf_jax.training.contrastive import permute_columns, permuted_batch
from cnf_jax.data import feature_dataset
from cnf_jax.data import mixture as mixture_lib
from cnf_jax.errors import UserInputError
from cnf_jax.tasks.oneclass import CIFAR10_CLASSES
from cli_util import subprocess_env
from conftest import ROOT

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


def _module(name):
  return config_lib.load_config_module(os.path.join(CONFIGS, f"{name}.py"))


# ---- the mixture sampler ---------------------------------------------------------------------

@pytest.mark.parametrize("text,match", [
    ("", "is empty"),
    ("tiny_imagenet", "not <source>:<weight>"),
    ("tiny_imagenet:0.5,cifar10/horse:x", "'x' of source 'cifar10/horse' is not a number"),
    ("tiny_imagenet:1.5,cifar10/horse:-0.5", "must be a finite number >= 0"),
    ("tiny_imagenet:0.5,cifar10/horse:0.4", "sum to 0.9, not 1"),
    ("a:0.5,a:0.5", "given twice"),
])
def test_mixture_syntax_errors(text, match):
  with pytest.raises(UserInputError, match=match):
    mixture_lib.parse(text)


def test_mixture_parse():
  assert mixture_lib.parse(" tiny_imagenet:0.9, cifar10/horse:0.1 ") == [("tiny_imagenet", 0.9), ("cifar10/horse", 0.1)]


def test_mixture_sampler_proportions_and_coverage():
  mix = mixture_lib.Mixture(("a", "b", "c", "never"), (0.7, 0.2, 0.1, 0.0), (500, 37, 11, 5))
  sampler = mixture_lib.MixtureSampler(mix, 64, seed=3)
  steps = 3000
  idx = np.stack([sampler.indices(s) for s in range(steps)])  # [steps, 64]
  source = np.searchsorted(mix.offsets, idx, side="right") - 1
  counts = np.stack([(source == j).sum(axis=1) for j in range(4)], axis=1)
  # Each batch's per-source counts are the multinomial draw the sampler reports.
  np.testing.assert_array_equal(counts, np.stack([sampler.counts(s) for s in range(steps)]))
  fractions = counts.sum(0) / counts.sum()
  # Realised fractions: 192,000 draws, so the standard error is < 0.0011; 0.006 is > 5 sigma.
  np.testing.assert_allclose(fractions, [0.7, 0.2, 0.1, 0.0], atol=0.006)
  np.testing.assert_allclose(sampler.realised_fractions(steps), fractions)
  # Per-step counts vary as a binomial: std of source a's count = sqrt(64 * 0.7 * 0.3) = 3.67.
  assert counts[:, 0].std() == pytest.approx(np.sqrt(64 * 0.7 * 0.3), rel=0.1)
  # Each source is drawn epoch by epoch without replacement: every row of source b is drawn
  # either floor or ceil of (draws / size) times.
  b_rows = idx[source == 1] - mix.offsets[1]
  per_row = np.bincount(b_rows, minlength=37)
  assert per_row.max() - per_row.min() <= 1


def test_mixture_sampler_is_deterministic_and_resumable():
  mix = mixture_lib.Mixture(("a", "b"), (0.5, 0.5), (100, 30))
  straight = mixture_lib.MixtureSampler(mix, 16, seed=1)
  expected = [straight.indices(s) for s in range(400)]
  resumed = mixture_lib.MixtureSampler(mix, 16, seed=1)  # a resumed run asks for step 250 first
  for s in list(range(250, 400)) + list(range(0, 250)):
    np.testing.assert_array_equal(resumed.indices(s), expected[s])
  other = mixture_lib.MixtureSampler(mix, 16, seed=2)
  assert not all(np.array_equal(other.indices(s), expected[s]) for s in range(5))


def test_mixture_source_without_rows_is_an_error():
  with pytest.raises(UserInputError, match="'b' has weight 0.5 but no rows"):
    mixture_lib.Mixture(("a", "b"), (0.5, 0.5), (10, 0))


# ---- column permutation --------------------------------------------------------------------

def test_permute_columns_keeps_marginals_and_breaks_correlation():
  rng = np.random.default_rng(0)
  a = rng.normal(size=2000)
  x = np.stack([a, a + 0.05 * rng.normal(size=2000), -a + rng.exponential(size=2000)], axis=1).astype(np.float32)
  assert np.corrcoef(x.T)[0, 1] > 0.99
  y = np.asarray(permute_columns(jax.random.key(0), x))
  # Every column is a permutation of the original column: the marginals are kept exactly.
  np.testing.assert_array_equal(np.sort(y, axis=0), np.sort(x, axis=0))
  assert not np.array_equal(y, x)
  corr = np.corrcoef(y.T)
  assert abs(corr[0, 1]) < 0.1 and abs(corr[0, 2]) < 0.1
  # Each column gets its own permutation (a shared one would keep the correlation).
  assert not np.array_equal(np.argsort(y[:, 0]), np.argsort(y[:, 1]))
  batch = {"inlier": x}
  assert set(permuted_batch(jax.random.key(1), batch, "contrastive")) == {"inlier", "contrastive"}
  np.testing.assert_array_equal(permuted_batch(jax.random.key(1), batch, "contrastive")["inlier"], x)
  np.testing.assert_array_equal(permuted_batch(jax.random.key(1), batch, "inlier")["inlier"],
                                permuted_batch(jax.random.key(1), batch, "contrastive")["contrastive"])


# ---- the ablation configs on made-up feature datasets ----------------------------------------

def _features(root, dim=8):
  """cifar10-{train,test} and tiny_imagenet-train in the extractor's format, class k around mean k."""
  rng = np.random.default_rng(0)
  means = rng.normal(size=(10, dim)) * 2.0
  meta = lambda names: {"class_names": list(names), "backbone": "effnet_lite0_pca128"}
  for split, per_class in (("train", 60), ("test", 20)):
    labels = np.repeat(np.arange(10), per_class)
    x = means[labels] + rng.normal(size=(len(labels), dim))
    feature_dataset.write(feature_dataset.dataset_dir(root, "cifar10", split, "effnet_lite0_pca128"), x, labels,
                          np.arange(len(labels)), metadata=dict(meta(CIFAR10_CLASSES), split=split), split=split)
  x = rng.normal(size=(300, dim)) * 3.0
  feature_dataset.write(feature_dataset.dataset_dir(root, "tiny_imagenet", "train", "effnet_lite0_pca128"), x,
                        np.zeros(300, int), np.arange(300), metadata=dict(meta(["all"]), split="train"),
                        split="train")
  return str(root)


def _local(name, arg, root, seed=0):
  c = _module(name).get_config(config_lib.join_arg(arg, "runlocal"))
  c.data.features_root, c.seed, c.train.steps = root, seed, 20
  return c


@pytest.fixture(scope="module")
def features(tmp_path_factory):
  return _features(tmp_path_factory.mktemp("features"))


@pytest.mark.parametrize("name,arg,extra_source,weight", [
    ("contamination", "d=0.25", "cifar10/horse", 0.25),
    ("narrow", "ratio=0", "cifar10/horse", 1.0),
])
def test_mixture_configs_run_end_to_end(tmp_path, features, name, arg, extra_source, weight):
  results = experiment.train_and_evaluate(_local(name, arg, features), str(tmp_path / "w"))
  mix = results["contrastive_mixture"]
  assert mix["sources"] == ["tiny_imagenet", extra_source]
  # The rows each source trains on: 90% of Tiny ImageNet's 300 and of the class's 60 training rows
  # (configs/oneclass.py holds out 10% of every source for the selection criterion).
  assert mix["weights"][1] == weight and mix["sizes"] == [270, 54]
  for model in ("cf", "contrastive_flow"):
    assert mix["realised_fractions"][model][1] == pytest.approx(weight, abs=0.1)
  assert results["num_contrastive"] == 360
  assert set(results["auroc"]) == {"cf", "flow_ratio"}
  other = "deer" if name == "contamination" else "horse"  # the class each figure singles out
  assert set(results["auroc_by_group"][other]) == {"cf", "flow_ratio"}
  scores = np.load(tmp_path / "w" / "scores.npz")
  # auroc_excluding[other]: the inliers against every anomaly but that class.
  keep = scores["group"] != CIFAR10_CLASSES.index(other)
  assert results["auroc_excluding"][other]["cf"] == pytest.approx(
      metrics.auroc(scores["score_cf"][keep], scores["is_anomaly"][keep]))
  assert results["auroc_excluding"][other] != results["auroc"]
  # Scores of the drawn contrastive sources, for the histograms (a weight-0 source is left out).
  n_con = {0.25: 360, 1.0: 60}[weight]
  assert scores["contrastive_score_cf"].shape == (n_con,) and np.isfinite(scores["contrastive_score_cf"]).all()
  assert set(np.unique(scores["contrastive_source"])) == ({0, 1} if weight < 1 else {1})
  written = ablations.write_report(name, str(tmp_path))
  assert all(os.path.getsize(p) > 0 for p in written)
  # Fig. 8 histograms come from the ratio-0 run (narrow only).
  assert any(p.endswith("narrow_hist.png") for p in written) == (name == "narrow")


def test_contamination_sweep_equals_separate_runs(tmp_path, features):
  """Mixture batches are drawn on the host: a vmapped sweep of different mixtures equals separate runs."""
  configs = lambda: [_local("contamination", "d=0", features, 0), _local("contamination", "d=0.9", features, 1)]
  separate = [experiment.train_and_evaluate(c, str(tmp_path / f"s{i}")) for i, c in enumerate(configs())]
  assert sweep.group_runs(configs()) == [[0, 1]]
  vmapped = sweep.train_and_evaluate_many(configs(), [str(tmp_path / f"v{i}") for i in range(2)])
  for i, (a, b) in enumerate(zip(separate, vmapped)):
    assert b["auroc"] == pytest.approx(a["auroc"], abs=1e-4)
    assert b["contrastive_mixture"] == a["contrastive_mixture"]
    np.testing.assert_allclose(np.load(tmp_path / f"v{i}" / "scores.npz")["score_cf"],
                               np.load(tmp_path / f"s{i}" / "scores.npz")["score_cf"], rtol=1e-4, atol=1e-4)
  # Both models see the mixture: CF's contrastive term is active (some log p above eps) and differs by D.
  assert vmapped[0]["auroc"]["cf"] != vmapped[1]["auroc"]["cf"]
  assert vmapped[0]["auroc"]["flow_ratio"] != vmapped[1]["auroc"]["flow_ratio"]
  ablations.write_report("contamination", str(tmp_path), str(tmp_path / "report"))
  table = (tmp_path / "report" / "contamination.md").read_text()
  # Two finished runs per D (separate and vmapped), AUROC in percent.
  row = next(l for l in table.splitlines() if l.startswith("| 0.9 |"))
  cf_deer = 100 * vmapped[1]["auroc_by_group"]["deer"]["cf"]
  assert f"{cf_deer:.1f} ± 0.0 (2)" in row
  assert (tmp_path / "report" / "contamination.png").stat().st_size > 10000


def test_eps_ablation_config(tmp_path, features):
  runs = config_lib.declared_sweep(_module("eps_ablation"))
  configs = [r.config(_module("eps_ablation"), "runlocal") for r in runs]
  groups = sweep.group_runs(configs)
  assert len(runs) == 48 and sorted(map(len, groups)) == [6, 42]  # fixed eps in one program, auto in another
  c = _local("eps_ablation", "cat", features)
  c.objective.eps = -3.0
  results = experiment.train_and_evaluate(c, str(tmp_path / "w"))
  assert results["eps"] == -3.0 and set(results["auroc"]) == {"cf"}


def test_cf_factors_config_changes_one_setting_per_run(tmp_path, features):
  module = _module("cf_factors")
  runs = config_lib.declared_sweep(module)
  assert len(runs) == (len(module.CLASSES) * len(module.FACTORS) * len(module.SEEDS)
                       + len(module.RAW_EPS_CLASSES) * 3)
  assert [f["objective.eps"] for f in module.RAW_EPS_FACTORS] == [500.0, 1000.0, 1500.0]
  assert len(module.RAW_EPS_CLASSES) == 8 and not set(module.RAW_EPS_CLASSES) & set(module.CLASSES)
  reference = module.get_config("cat")
  # The reference is the ten-class table's CF: configs/oneclass.py:<class>,chosen,fast.
  table = _module("oneclass").get_config("cat,chosen,fast")
  table.methods = "cf"
  assert reference.to_dict() == table.to_dict()
  def value(c, dotted):
    for part in dotted.split("."):
      c = c[part]
    return c
  keys = config_lib.flatten_keys(reference)
  for run in runs:
    config = run.config(module)
    if config.data.inlier_class != "cat":
      continue
    changed = {k for k in keys if value(config, k) != value(reference, k)} - {"seed"}
    assert changed == set(run.overrides) - {"seed"}, (run.name, changed)
  # Runs that differ only in data.* and eps share a program: the classes, the reference, the two
  # contrastive-set sizes and the three fixed eps.
  groups = sweep.group_runs([r.config(module) for r in runs])
  assert sorted(map(len, groups))[-1] == len(module.CLASSES) * 6 * len(module.SEEDS) + len(module.RAW_EPS_CLASSES) * 3
  assert len(groups) == len(module.FACTORS) - 5
  c = _local("cf_factors", "cat", features)
  c.preprocess.normalize, c.objective.eps_auto = "standardize", True
  results = experiment.train_and_evaluate(c, str(tmp_path / "w"))
  assert set(results["auroc"]) == {"cf"} and "selection" in results


def test_mixture_errors_name_the_source(tmp_path, features):
  c = _local("contamination", "d=0.5", features)
  c.data.contrastive_mixture = "tiny_imagenet:0.5,cifar10/zebra:0.5"
  with pytest.raises(UserInputError, match="class 'zebra' is not in"):
    experiment.train_and_evaluate(c, str(tmp_path / "a"))
  c.data.contrastive_mixture = "tiny_imagenet:0.5,svhn:0.5"
  with pytest.raises(UserInputError, match="feature dataset not found: .*svhn-train"):
    experiment.train_and_evaluate(c, str(tmp_path / "b"))
  with pytest.raises(UserInputError, match="d=1.5 must be in"):
    _module("contamination").get_config("d=1.5")


# ---- tabular --------------------------------------------------------------------------------

def _table(n_normal=300, n_anomaly=60, seed=0):
  """Columns with a strong dependence (c = a + b); anomalies have the same marginals but c = a - b."""
  rng = np.random.default_rng(seed)
  a, b = rng.normal(size=(2, n_normal + n_anomaly))
  noise = 0.1 * rng.normal(size=n_normal + n_anomaly)
  label = np.r_[np.zeros(n_normal), np.ones(n_anomaly)]
  c = np.where(label == 1, a - b, a + b) + noise
  return np.stack([a, b, c, rng.normal(size=len(a))], axis=1), label


def _write_csv(path, x, label, header=None, index=True):
  header = header or ([""] if index else []) + [f"f{j}" for j in range(x.shape[1])] + ["Class"]
  with open(path, "w") as f:
    f.write(",".join(header) + "\n")
    for i, (row, y) in enumerate(zip(x, label)):
      f.write(",".join(([str(i)] if index else []) + [repr(float(v)) for v in row] + [str(int(y))]) + "\n")
  return str(path)


def _tabular(path, steps=20):
  c = _module("tabular").get_config("runlocal")
  c.data.path, c.train.steps = path, steps
  return c


def test_tabular_runs_and_finds_broken_correlations(tmp_path):
  x, label = _table()
  path = _write_csv(tmp_path / "t.csv", x, label)
  c = _tabular(path, steps=300)
  # Two models (flow_ratio runs in test_tabular_sweep_equals_separate_runs): auto eps from the flow.
  c.methods, c.objective.eps_holdout, c.train.lr = "cf,flow", 0.0, 2e-3
  results = experiment.train_and_evaluate(c, str(tmp_path / "w"))
  assert results["contrastive"] == "permute"
  assert results["num_inliers"] == 210 and results["num_test"] == 90 + 60  # 30% of 300 normals + all anomalies
  # The anomalies differ from the normals only in a dependence between columns (same marginals):
  # a flow of the joint and the contrastive flow against the product of marginals both see it.
  assert results["auroc"]["flow"] > 0.8 and results["auroc"]["cf"] > 0.8
  scores = np.load(tmp_path / "w" / "scores.npz")
  assert scores["contrastive_score_cf"].shape == (210,)  # the permuted training normals
  written = ablations.write_report("tabular", str(tmp_path))
  assert [os.path.basename(p) for p in written] == ["tabular_hist.png", "tabular.md"]
  assert f"| CF | {100 * results['auroc']['cf']:.1f} ± 0.0 (1) |" in open(written[1]).read()
  # npz input gives the same table.
  np.savez(tmp_path / "t.npz", x=x, Class=label)
  c = _tabular(str(tmp_path / "t.npz"), steps=20)
  assert experiment.train_and_evaluate(c, str(tmp_path / "w2"))["num_test"] == 150


@pytest.mark.parametrize("edit,match", [
    ("no_label", "no label column 'Class'; columns: <unnamed>, f0, f1"),
    ("text", r"non-numeric value 'abc' in column 'f1', line 5"),
    ("constant", "column\\(s\\) f2 are constant over the training normals.*drop_columns=f2"),
    ("few", "too few rows: 4 training normals"),
    ("labels", "must hold 0 \\(normal\\) or 1 \\(anomaly\\); found \\[2.0\\]"),
    ("missing", "table not found"),
    ("drop", "drop_columns names 'zzz'"),
    ("ragged", "line 3 has 5 fields, the header has 6"),
])
def test_tabular_input_errors(tmp_path, edit, match):
  x, label = _table(n_normal=40, n_anomaly=5)
  c = _tabular("")
  if edit == "no_label":
    c.data.path = _write_csv(tmp_path / "t.csv", x, label,
                             header=["", "f0", "f1", "f2", "f3", "label"])
  elif edit == "text":
    path = _write_csv(tmp_path / "t.csv", x, label)
    lines = open(path).read().splitlines()
    fields = lines[4].split(",")
    fields[2] = "abc"
    lines[4] = ",".join(fields)
    open(path, "w").write("\n".join(lines) + "\n")
    c.data.path = path
  elif edit == "constant":
    x[:, 2] = 1.5
    c.data.path = _write_csv(tmp_path / "t.csv", x, label)
  elif edit == "few":
    c.data.path = _write_csv(tmp_path / "t.csv", x[34:], label[34:])
  elif edit == "labels":
    label[0] = 2
    c.data.path = _write_csv(tmp_path / "t.csv", x, label)
  elif edit == "missing":
    c.data.path = str(tmp_path / "nope.csv")
  elif edit == "drop":
    c.data.path, c.data.drop_columns = _write_csv(tmp_path / "t.csv", x, label), "f1,zzz"
  elif edit == "ragged":
    path = _write_csv(tmp_path / "t.csv", x, label)
    lines = open(path).read().splitlines()
    lines[2] = ",".join(lines[2].split(",")[:5])
    open(path, "w").write("\n".join(lines) + "\n")
    c.data.path = path
  with pytest.raises(UserInputError, match=match):
    experiment.train_and_evaluate(c, str(tmp_path / "w"))


def test_tabular_sweep_equals_separate_runs(tmp_path):
  """The permutation is drawn inside the step from (seed, step): vmapped seeds equal separate runs."""
  x, label = _table(n_normal=120, n_anomaly=20)
  path = _write_csv(tmp_path / "t.csv", x, label)

  def configs():
    cs = [_tabular(path, 20), _tabular(path, 20)]
    for seed, c in enumerate(cs):  # three models: flow, contrastive_flow (permuted batches), cf
      c.seed, c.methods, c.objective.eps_auto, c.objective.eps = seed, "cf,flow_ratio", False, -5.0
    return cs

  separate = [experiment.train_and_evaluate(c, str(tmp_path / f"s{i}")) for i, c in enumerate(configs())]
  vmapped = sweep.train_and_evaluate_many(configs(), [str(tmp_path / f"v{i}") for i in range(2)])
  for a, b in zip(separate, vmapped):
    assert b["auroc"] == pytest.approx(a["auroc"], abs=1e-4)
  assert vmapped[0]["auroc"] != vmapped[1]["auroc"]


def _eps_runs(root):
  """Four finished runs of the eps study (config.json and results.json only) under root."""
  def run(name, cls, seed, eps, auto, auroc):
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(
        {"seed": seed, "data": {"inlier_class": cls}, "objective": {"eps": eps, "eps_auto": auto}}))
    (d / "results.json").write_text(json.dumps({"methods": ["cf"], "auroc": {"cf": auroc}, "eps": eps}))

  run("deer-eps0-s0", "deer", 0, 0.0, False, 0.90)
  run("deer-eps0-s1", "deer", 1, 0.0, False, 0.92)
  run("deer-auto-s0", "deer", 0, 151.0, True, 0.88)
  run("cat-eps100-s0", "cat", 0, 100.0, False, 0.80)
  return root


def test_eps_report_tables_fixed_and_auto_eps(tmp_path):
  """The eps study's table and plot from finished runs' config.json and results.json."""
  _eps_runs(tmp_path / "root")
  written = ablations.write_report("eps", str(tmp_path / "root"))
  table = open(written[-1]).read()
  assert "| deer | 0 | 0.0 | 91.0 ± 1.0 (2) |" in table
  assert "| deer | auto | 151.0 | 88.0 ± 0.0 (1) |" in table
  assert "| cat | 100 | 100.0 | 80.0 ± 0.0 (1) |" in table
  with pytest.raises(UserInputError, match="no finished run"):
    ablations.write_report("eps", str(tmp_path))
  with pytest.raises(UserInputError, match="not one of"):
    ablations.write_report("contaminaton", str(tmp_path / "root"))


def test_study_reports_through_the_report_cli(tmp_path):
  """python -m cnf_jax.report --study=...: the files of write_report, their paths and the table printed."""
  root = _eps_runs(tmp_path / "root")
  env = subprocess_env()
  def report(*args):
    return subprocess.run([sys.executable, "-m", "cnf_jax.report", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)

  proc = report("--study=eps", f"--workdir={root}", f"--out={tmp_path / 'out'}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.splitlines()
  assert lines[:2] == [str(tmp_path / "out" / "eps.png"), str(tmp_path / "out" / "eps.md")]
  assert "| deer | auto | 151.0 | 88.0 ± 0.0 (1) |" in lines
  assert (tmp_path / "out" / "eps.png").stat().st_size > 0 and not (root / "eps.md").exists()
  bad = report("--study=eps", f"--workdir={tmp_path / 'empty'}")
  assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
  assert ablations.STUDIES == report_cli.STUDIES   # the CLI's copy (it does not import ablations to parse flags)
