"""Each classical baseline against the PyOD detector it re-implements, on new rows.

pyod is an optional extra (pip install -e ".[pyod]"); without it this file is skipped.
The baselines are fitted on training rows and score test rows that are not among them:
the comparison is with PyOD's decision_function on those rows (not its decision_scores_
of the training rows, which leave each row out of its own neighbours).
"""
import os
import warnings

import numpy as np
import pytest

pytest.importorskip("pyod")
from pyod.models.abod import ABOD  # noqa: E402
from pyod.models.kde import KDE  # noqa: E402
from pyod.models.knn import KNN  # noqa: E402
from pyod.models.lof import LOF  # noqa: E402
from pyod.models.mcd import MCD  # noqa: E402
from pyod.models.pca import PCA  # noqa: E402

from cnf_jax.evaluation import baselines  # noqa: E402
from cnf_jax.experiments import config_lib  # noqa: E402

# The same arithmetic up to the order of operations and the neighbour search (PyOD's trees,
# our brute force): measured differences are below 1e-14 relative; KDE and PCA run the very same
# sklearn code and agree exactly, and so does MCD, whose search (cnf_jax.evaluation.mcd) makes
# sklearn's draws and choices on data like these.
RTOL = 1e-6

# Our method, PyOD's detector with its defaults (MCD: the run's seed as random_state).
PYOD = {
    "kde": lambda seed: KDE(),
    "pca": lambda seed: PCA(),
    "knn": lambda seed: KNN(),
    "lof": lambda seed: LOF(),
    "abod": lambda seed: ABOD(),
    "mcd": lambda seed: MCD(random_state=seed),
}


def _random(seed):
  """Train [300, 8], test [100, 8]: half from the training distribution, half wider."""
  rng = np.random.default_rng(seed)
  mix = rng.normal(size=(8, 8)) / 3 + np.eye(8)
  train = rng.normal(size=(300, 8)) @ mix
  test = np.concatenate([rng.normal(size=(50, 8)) @ mix, 3 * rng.normal(size=(50, 8))])
  return train, test


def _with_ties():
  """Duplicated training rows, test rows equal to (duplicated) training rows and to each other."""
  train, test = _random(7)
  train[10:13] = train[9]                   # one row four times
  train[20] = train[21]
  test[:3] = train[9]                       # on the quadruplicated row: ABOD skips its pairs
  test[3] = train[20]
  test[4] = train[50]
  test[5] = test[6]
  return train, test


def _ours(name, train, test, seed, **options):
  cfg = config_lib.default_config().baselines
  cfg.update(options)
  return baselines.fit(name, train, None, cfg, seed)(test)


def _pyod(detector, train, test):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")   # e.g. MCD's "covariance matrix not full rank" on tied rows
    return detector.fit(train).decision_function(test)


@pytest.mark.parametrize("name", sorted(PYOD))
@pytest.mark.parametrize("data", ["seed=0", "seed=1", "seed=2", "ties"])
def test_baseline_equals_pyod_on_new_rows(name, data):
  seed = 0 if data == "ties" else int(data.split("=")[1])
  train, test = _with_ties() if data == "ties" else _random(seed)
  ours = _ours(name, train, test, seed)
  theirs = _pyod(PYOD[name](seed), train, test)
  assert ours.shape == theirs.shape == (100,) and np.isfinite(ours).all()
  if name == "abod" and data == "ties":
    # The first 3 test rows equal 4 of their 5 neighbours: no pair forms an angle, PyOD's
    # variance of nothing is NaN, ours 0 (the documented difference).
    assert np.isnan(theirs[:3]).all() and (ours[:3] == 0).all()
    ours, theirs = ours[3:], theirs[3:]
  np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=0)


@pytest.mark.parametrize("standardize,weighted", [(False, True), (True, False), (False, False)])
def test_pca_options_equal_pyods(standardize, weighted):
  train, test = _random(3)
  ours = _ours("pca", train, test, 0, pca_standardize=standardize, pca_weighted=weighted)
  theirs = _pyod(PCA(standardization=standardize, weighted=weighted), train, test)
  np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=0)


@pytest.mark.parametrize("method", baselines.KNN_METHODS)
def test_knn_methods_and_other_k_equal_pyods(method):
  train, test = _with_ties()
  ours = _ours("knn", train, test, 0, knn_method=method, knn_k=9)
  np.testing.assert_allclose(ours, _pyod(KNN(method=method, n_neighbors=9), train, test), rtol=RTOL, atol=0)
  ours = _ours("abod", train, test, 0, abod_k=9)
  np.testing.assert_allclose(ours, _pyod(ABOD(n_neighbors=9), train, test), rtol=RTOL, atol=0)


# ---- pyod:<Name> methods -------------------------------------------------------------------------

def test_pyod_methods_run_pyods_detector_with_the_seed():
  from pyod.models.copod import COPOD
  from pyod.models.ecod import ECOD
  from pyod.models.iforest import IForest
  from pyod.models.ocsvm import OCSVM
  train, test = _random(4)
  for name, detector in [("IForest", IForest(random_state=3)), ("ECOD", ECOD()), ("COPOD", COPOD()),
                         ("OCSVM", OCSVM())]:
    ours = baselines.fit(f"pyod:{name}", train, None, None, seed=3)(test)
    assert ours.dtype == np.float64
    np.testing.assert_array_equal(ours, _pyod(detector, train, test), err_msg=name)
  # A class outside pyod.models.<name in lower case> is found by looking through the modules.
  assert type(baselines.pyod_detector("pyod:KShape")).__module__ == "pyod.models.ts_kshape"


@pytest.mark.parametrize("method,message", [
    ("pyod:Nope", "method 'pyod:Nope': PyOD 3.6.7 has no detector class 'Nope' in pyod.models (case-sensitive"),
    ("pyod:iforest", "has no detector class 'iforest'"),
    ("pyod:LSCP", "method 'pyod:LSCP': PyOD's LSCP cannot be built with its defaults: "),
])
def test_unknown_or_unbuildable_pyod_class_is_one_line(method, message):
  from cnf_jax.errors import UserInputError
  config = config_lib.default_config()
  config.methods = f"cf,{method}"
  with pytest.raises(UserInputError) as e:
    config_lib.validate(config)
  assert message in str(e.value) and "\n" not in str(e.value)


def _npz(path):
  rng = np.random.default_rng(0)
  np.savez(path, inliers=rng.normal(size=(300, 6)) + 1.0, contrastive=2 * rng.normal(size=(300, 6)),
           test=np.concatenate([rng.normal(size=(60, 6)) + 1.0, 2 * rng.normal(size=(60, 6))]),
           test_is_anomaly=np.repeat([0, 1], 60))
  return str(path)


def _direct_aurocs(path, seed):
  """AUROCs of PyOD's IForest and ECOD fitted directly on the npz's inliers, projected onto the
  unit sphere as the run does (configs/npz.py's preprocessing)."""
  from pyod.models.ecod import ECOD
  from pyod.models.iforest import IForest
  from cnf_jax.data import preprocessing
  from cnf_jax.evaluation import metrics
  with np.load(path) as f:
    inliers, test, is_anomaly = (preprocessing.apply(f["inliers"], "sphere", {}),
                                 preprocessing.apply(f["test"], "sphere", {}), f["test_is_anomaly"].astype(bool))
  return {f"pyod:{type(d).__name__}": metrics.auroc(_pyod(d, inliers.astype(np.float64), test.astype(np.float64)),
                                                    is_anomaly)
          for d in (IForest(random_state=seed), ECOD())}


def test_pyod_methods_in_a_cli_run_a_sweep_and_the_report(tmp_path, capsys):
  import json
  from cli_util import run_main
  from cnf_jax import report as report_cli
  from cnf_jax.experiments.sweep import run_declared_sweep
  data, root = _npz(tmp_path / "d.npz"), tmp_path / "root"

  # A single run of the CLI: a baseline and two PyOD detectors side by side (no flow method,
  # which would add ~30 s of training here; flows and baselines meet in test_experiment.py).
  proc = run_main("--config=configs/npz.py:runlocal", f"--config.data.path={data}",
                  "--config.methods=knn,pyod:IForest,pyod:ECOD", f"--workdir={root / 'single'}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  results = json.loads((root / "single" / "results.json").read_text())
  assert set(results["auroc"]) == {"knn", "pyod:IForest", "pyod:ECOD"}
  assert set(results["baseline_seconds"]) == {"knn", "pyod:IForest", "pyod:ECOD"}
  direct = _direct_aurocs(data, seed=0)
  assert {m: results["auroc"][m] for m in direct} == direct
  with np.load(root / "single" / "scores.npz") as scores:
    assert scores["score_pyod:IForest"].shape == (120,)

  # A declared sweep (the npz config's, two of its runs), each run with its own seed.
  configs_npz = os.path.join(os.path.dirname(__file__), "..", "configs", "npz.py")
  runs = run_declared_sweep(configs_npz, str(root), "runlocal",
                            ["objective.eps_auto=False-seed=0", "objective.eps_auto=False-seed=1"],
                            {"data.path": data, "methods": "knn,pyod:IForest,pyod:ECOD"})
  for seed in (0, 1):
    aurocs = runs[f"objective.eps_auto=False-seed={seed}"]["auroc"]
    assert {m: aurocs[m] for m in direct} == _direct_aurocs(data, seed)

  # The report: the methods are columns like any other.
  capsys.readouterr()
  assert report_cli.main([f"--workdir={root}", "--json"]) == 0
  summary = json.loads(capsys.readouterr().out)
  assert summary["auroc"]["objective.eps_auto=False"]["pyod:IForest"]["n"] == 2
  assert summary["auroc"]["single"]["pyod:ECOD"]["mean"] == pytest.approx(direct["pyod:ECOD"])
  assert report_cli.main([f"--workdir={root}", "--noplots", f"--out={tmp_path / 'md'}"]) == 0
  report = (tmp_path / "md" / "report.md").read_text()
  assert "| pyod:ECOD | 93.0 ± 0.0 | 93.0 |" in report and "| pyod:IForest | 94.3 ± 0.4 | 93.9 |" in report
