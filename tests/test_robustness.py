"""The bad-input catalogue: each case gives one clear line naming the problem, and no output that looks complete.

Cases run through the estimator (UserInputError), the score function and CLI
(exit 2, one "error: ..." line, --out untouched) and the training CLI (exit 2).
Earlier cases live next to their code and are not repeated here: unknown config
keys, invalid config values, unknown class names, NaN/Inf/empty/mismatched
feature arrays and a workdir of another feature dimension (test_cli.py).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cli_util import ROOT, run_main, subprocess_env
import score_util
from score_util import run, shared  # noqa: F401 (pytest fixtures: the finished run shared with test_score.py)
from cnf_jax.detector import ContrastiveFlowDetector
from cnf_jax.errors import UserInputError

TINY = dict(steps=5, hidden=(8,), num_blocks=2, batch_size=16)


def _data(n=50, d=3, seed=0):
  return np.random.default_rng(seed).normal(size=(n, d))


def _with(x, i, j, v):
  x = x.astype(object) if isinstance(v, str) else x.copy()
  x[i, j] = v
  return x


@pytest.fixture(scope="module")
def fitted():
  return ContrastiveFlowDetector(**TINY).fit(_data())


# (case id, callable(fitted detector, tmp_path), substring the one-line message must contain)
ESTIMATOR_CASES = [
    ("nan_value", lambda d, t: ContrastiveFlowDetector(**TINY).fit(_with(_data(), 3, 1, np.nan)),
     "X contains 1 NaN values in 1 rows (first rows: [3])"),
    ("inf_value", lambda d, t: d.decision_function(_with(_data(5), 2, 0, -np.inf)), "X contains 1 inf values"),
    ("wrong_dimension", lambda d, t: d.predict(_data(5, 4)), "X has 4 features, but ContrastiveFlowDetector is expecting 3"),
    ("empty_array", lambda d, t: ContrastiveFlowDetector(**TINY).fit(np.zeros((0, 3))), "X: 0 samples (empty array)"),
    ("single_sample", lambda d, t: ContrastiveFlowDetector(**TINY).fit(_data(1)), "needs at least 2 samples to fit, got 1"),
    ("one_dimensional", lambda d, t: d.decision_function(np.ones(3)), "expected a 2-D array"),
    ("all_but_one_column_constant", lambda d, t: ContrastiveFlowDetector(**TINY).fit(
        _with(_with(_data(), slice(None), 2, 7.0), slice(None), 0, 0.0)),
     "2 of its 3 columns are constant in the training rows; the flow needs at least 2 that vary, 1 do"),
    ("non_numeric_cell", lambda d, t: ContrastiveFlowDetector(**TINY).fit(_with(_data(), 4, 0, "n/a")),
     "X has non-numeric entries"),
    ("unknown_method", lambda d, t: ContrastiveFlowDetector(method="glow").fit(_data()),
     "ContrastiveFlowDetector(method='glow'): choose one of cf, flow, flow_ratio"),
    ("bad_contamination", lambda d, t: ContrastiveFlowDetector(contamination=0.9).fit(_data()),
     "contamination=0.9): must be a number in (0, 0.5]"),
    ("bad_eps", lambda d, t: ContrastiveFlowDetector(eps="median").fit(_data()), "eps='median'): must be 'auto'"),
    ("bad_noise_std", lambda d, t: ContrastiveFlowDetector(noise_std=-0.1).fit(_data()),
     "noise_std=-0.1): must be 'auto' or 'scaled' or 'silverman' or a finite number >= 0"),
    ("contrastive_wrong_dimension", lambda d, t: ContrastiveFlowDetector(**TINY).fit(_data(), contrastive=_data(20, 5)),
     "contrastive has 5 features, but ContrastiveFlowDetector is expecting 3"),
    ("unknown_contrastive_recipe", lambda d, t: ContrastiveFlowDetector(**TINY).fit(_data(), contrastive="shuffle"),
     "contrastive='shuffle': pass an array [M, 3] or 'permute'"),
    ("pvalues_without_calibration",
     lambda d, t: ContrastiveFlowDetector(calibration_fraction=0, **TINY).fit(_data()).pvalues(_data(2)),
     "no calibration scores"),
    ("calibration_split_too_small", lambda d, t: ContrastiveFlowDetector(**TINY).fit(_data(4)),
     "calibration_fraction=0.2 of 4 samples is 0 samples"),
    ("bad_alpha", lambda d, t: d.predict(_data(2), alpha=5), "alpha must be a number in (0, 1)"),
    ("all_zero_row_on_the_sphere", lambda d, t: ContrastiveFlowDetector(normalize="sphere", **TINY).fit(
        _with(_data(), 0, slice(None), 0.0)), "1 rows are all-zero and cannot be projected onto the sphere"),
    ("truncated_detector_file", lambda d, t: _truncated_detector(d, t), "is not a readable detector file"),
    ("detector_file_of_another_architecture", lambda d, t: _other_architecture(d, t),
     "do not fit the recorded architecture"),
]


def _truncated_detector(det, tmp_path):
  det.save(str(tmp_path / "d.npz"))
  blob = (tmp_path / "d.npz").read_bytes()
  (tmp_path / "d.npz").write_bytes(blob[:len(blob) // 2])
  ContrastiveFlowDetector.load(str(tmp_path / "d.npz"))


def _other_architecture(det, tmp_path):
  """A saved detector whose recorded hidden widths were edited: its weights no longer fit."""
  det.save(str(tmp_path / "d.npz"))
  with np.load(tmp_path / "d.npz") as f:
    arrays = dict(f)
  meta = json.loads(str(arrays["meta"]))
  meta["params"]["hidden"] = [16]
  arrays["meta"] = np.array(json.dumps(meta))
  np.savez(tmp_path / "d.npz", **arrays)
  ContrastiveFlowDetector.load(str(tmp_path / "d.npz"))


@pytest.mark.parametrize("case,call,message", ESTIMATOR_CASES, ids=[c[0] for c in ESTIMATOR_CASES])
def test_estimator_bad_input(fitted, tmp_path, case, call, message):
  with pytest.raises(UserInputError) as info:
    call(fitted, tmp_path)
  text = str(info.value)
  assert message in text and "\n" not in text, text


# ---- the score CLI ------------------------------------------------------------------------------


def _features(tmp_path, x, **extra):
  np.savez(tmp_path / "in.npz", features=x, **extra)
  return str(tmp_path / "in.npz")


def _csv(tmp_path, text):
  (tmp_path / "in.csv").write_text(text)
  return str(tmp_path / "in.csv")


def _other_architecture_run(workdir, tmp_path):
  """A copy of the run whose config.json says hidden=(16,): its checkpoints no longer fit."""
  other = tmp_path / "other"
  score_util.copy_run(workdir, other)
  config = json.loads((other / "config.json").read_text())
  config["flow"]["hidden"] = [16]
  (other / "config.json").write_text(json.dumps(config))
  return str(other)


def _unfinished_run(workdir, tmp_path):
  other = tmp_path / "unfinished"
  score_util.copy_run(workdir, other)
  os.remove(other / "results.json")
  return str(other)


# (case id, callable(workdir, tmp_path) -> (workdir, input, extra kwargs), message substring)
SCORE_CASES = [
    ("wrong_feature_dimension", lambda w, t: (w, _features(t, _data(5, 4)), {}),
     "4 features per row, but the run was trained on 3"),
    ("nan_in_input", lambda w, t: (w, _features(t, _with(_data(5), 1, 1, np.nan)), {}), "1 non-finite values"),
    ("non_numeric_csv_cell", lambda w, t: (w, _csv(t, "id,a,b,c\nr0,1,2,3\nr1,1,abc,3\n"), {}),
     "line 3, column 'b': 'abc' is not a number"),
    ("ragged_csv_row", lambda w, t: (w, _csv(t, "a,b,c\n1,2,3\n1,2\n"), {}), "line 3 has 2 cells, the header has 3"),
    ("empty_csv", lambda w, t: (w, _csv(t, ""), {}), "is empty"),
    ("features_of_another_backbone", lambda w, t: (w, _features(t, _data(5), backbone=np.array("effnet_lite0")), {}),
     "holds features of backbone 'effnet_lite0' but the run was trained on"),
    ("truncated_npz", lambda w, t: (w, _truncated_npz(t), {}), "is not a readable .npz file"),
    ("images_for_a_feature_run", lambda w, t: (w, str(t), {}), "trained on feature vectors, not images"),
    ("unknown_input_type", lambda w, t: (w, _text_file(t), {}),
     "expected a .npz, a .csv, an image folder or a .zip"),
    ("missing_input", lambda w, t: (w, str(t / "nope.npz"), {}), "does not exist"),
    ("unfinished_run", lambda w, t: (_unfinished_run(w, t), _features(t, _data(5)), {}), "the run has not finished"),
    ("checkpoint_of_another_architecture", lambda w, t: (_other_architecture_run(w, t), _features(t, _data(5)), {}),
     "does not fit the architecture in config.json"),
    ("method_the_run_did_not_train", lambda w, t: (w, _features(t, _data(5)), {"method": "knn"}),
     "--method='knn': this run trained cf, flow, flow_ratio"),
    ("bad_alpha", lambda w, t: (w, _features(t, _data(5)), {"alpha": 1.0}), "--alpha=1.0 must be in (0, 1)"),
]


def _text_file(tmp_path):
  (tmp_path / "in.txt").write_text("hello")
  return str(tmp_path / "in.txt")


def _truncated_npz(tmp_path):
  np.savez(tmp_path / "in.npz", features=_data(100))
  blob = (tmp_path / "in.npz").read_bytes()
  (tmp_path / "in.npz").write_bytes(blob[:200])
  return str(tmp_path / "in.npz")


@pytest.mark.parametrize("case,make,message", SCORE_CASES, ids=[c[0] for c in SCORE_CASES])
def test_score_bad_input_leaves_the_output_alone(run, tmp_path, case, make, message):
  from cnf_jax import score
  workdir, _ = run
  workdir, input_path, kwargs = make(workdir, tmp_path)
  out = tmp_path / "scores.csv"
  out.write_text("previous results\n")
  with pytest.raises(UserInputError) as info:
    score.score(workdir, input_path, str(out), **kwargs)
  text = str(info.value)
  assert message in text and "\n" not in text, text
  assert out.read_text() == "previous results\n" and not os.path.exists(str(out) + ".tmp")


@pytest.mark.parametrize("case", ["wrong_feature_dimension", "non_numeric_csv_cell", "missing_flag"])
def test_score_cli_exits_2_with_one_error_line(run, tmp_path, case):
  workdir, _ = run
  args = {"wrong_feature_dimension": [f"--input={_features(tmp_path, _data(5, 4))}"],
          "non_numeric_csv_cell": [f"--input={_csv(tmp_path, 'a,b,c' + chr(10) + '1,x,3' + chr(10))}"],
          "missing_flag": []}[case]
  proc = score_util.run_score(f"--workdir={workdir}", *args, f"--out={tmp_path / 's.csv'}")
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert not (tmp_path / "s.csv").exists()


# ---- the training CLI ---------------------------------------------------------------------------

def _npz(tmp_path, **overrides):
  return str(score_util.write_features(tmp_path / "f.npz")) if not overrides else _npz_with(tmp_path, overrides)


def _npz_with(tmp_path, overrides):
  path = score_util.write_features(tmp_path / "f.npz")
  with np.load(path) as f:
    arrays = dict(f)
  arrays.update(overrides)
  np.savez(path, **arrays)
  return str(path)


MAIN_CASES = [
    ("missing_config_file", lambda t: ["--config=configs/nope.py", f"--workdir={t / 'w'}"],
     "config file 'configs/nope.py' not found"),
    ("unknown_config_word", lambda t: ["--config=configs/toy2d.py:runlokal", f"--workdir={t / 'w'}"],
     "unknown argument(s) 'runlokal'"),
    ("non_numeric_feature_array", lambda t: ["--config=configs/npz.py:runlocal",
                                             f"--config.data.path={_npz(t, inliers=np.full((10, 3), 'a'))}",
                                             f"--workdir={t / 'w'}"],
     "inlier training features: expected numbers"),
    ("test_labels_without_anomalies", lambda t: ["--config=configs/npz.py:runlocal",
                                                 f"--config.data.path={_npz(t, test_is_anomaly=np.zeros(100))}",
                                                 f"--workdir={t / 'w'}"],
     "AUROC needs both inliers and anomalies"),
    ("workdir_is_a_file", lambda t: ["--config=configs/toy2d.py:runlocal", f"--workdir={_file(t)}"],
     "is not a usable directory"),
    ("unknown_method", lambda t: ["--config=configs/toy2d.py:runlocal", "--config.methods=cf,svm",
                                  f"--workdir={t / 'w'}"],
     "methods entry='svm' is not valid; choose one of cf, flow, flow_ratio, oe, mse, mse_ratio, kde"),
]


def _file(tmp_path):
  (tmp_path / "afile").write_text("")
  return tmp_path / "afile"


@pytest.mark.parametrize("case,args,message", MAIN_CASES, ids=[c.values[0] if hasattr(c, "values") else c[0]
                                                               for c in MAIN_CASES])
def test_main_cli_bad_input(tmp_path, case, args, message):
  proc = run_main(*args(tmp_path))
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert message in errors[0], errors[0]
  assert not (tmp_path / "w" / "results.json").exists()


# ---- the extractor ------------------------------------------------------------------------------

def test_extract_non_image_file_is_named(tmp_path):
  from PIL import Image
  root = tmp_path / "imgs" / "train" / "cat"
  root.mkdir(parents=True)
  Image.new("RGB", (8, 8)).save(root / "ok.png")
  (root / "notes.png").write_text("not an image")
  env = subprocess_env()
  proc = subprocess.run([sys.executable, "-m", "cnf_jax.extract", f"--source={tmp_path / 'imgs'}", "--split=train",
                         "--backbone=pixels", "--resolution=8", "--bad_files=error", f"--out={tmp_path / 'out'}"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1 and "notes.png" in errors[0] and "not a readable image" in errors[0]
  assert not (tmp_path / "out").exists()


def test_truncated_feature_shard_is_named(tmp_path):
  from cnf_jax.data import feature_dataset as fd
  path = str(tmp_path / "ds")
  fd.write(path, np.ones((10, 4), np.float32), np.zeros(10, np.int64), np.arange(10),
           metadata={"class_names": ["a"], "backbone": "pixels"})
  shard = next(p for p in os.listdir(path) if ".tfrecord" in p)
  blob = open(os.path.join(path, shard), "rb").read()
  open(os.path.join(path, shard), "wb").write(blob[:len(blob) // 2])
  with pytest.raises(UserInputError, match=f"shard .*{shard}.* truncated or corrupt"):
    fd.load(path)
