"""ContrastiveFlowDetector.export: one jax.export program that scores as decision_function, runs with
only numpy and jax, is read back by cnf_jax.exported and by `python -m cnf_jax.score --detector`."""
import csv
import hashlib
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from cnf_jax import exported
from cnf_jax.detector import ContrastiveFlowDetector
from cnf_jax.errors import UserInputError
from cnf_jax.evaluation import metrics
from cnf_jax.evaluation.conformal import conformal_pvalues
from score_util import read_scores, run_score

METHODS = ("cf", "flow", "flow_ratio")
TINY = dict(num_blocks=2, hidden=(16,), steps=30, batch_size=64)


def _rows(rng, n, shift=0.0):
  """n rows of 5 columns around 2 (+ shift), column 2 a stuck sensor at 1.5."""
  x = rng.normal(size=(n, 5)) * [1.0, 3.0, 1.0, 0.5, 2.0] + 2.0 + shift
  x[:, 2] = 1.5
  return x


_RNG = np.random.default_rng(0)
X_TRAIN = _rows(_RNG, 400)
TEST = np.concatenate([_rows(_RNG, 1500), _rows(_RNG, 1500, shift=3.0)])
TEST[:, 2] = _RNG.normal(size=len(TEST))   # new rows may differ in the dropped column: it is not scored
IS_ANOMALY = np.repeat([False, True], 1500)
_FITTED = {}


def fitted(method, normalize="standardize"):
  """A tiny detector of `method` on X_TRAIN (one constant column), fitted once per test process."""
  if (method, normalize) not in _FITTED:
    det = ContrastiveFlowDetector(method=method, normalize=normalize, **TINY).fit(X_TRAIN)
    assert det.constant_columns_.tolist() == [2]
    _FITTED[method, normalize] = det
  return _FITTED[method, normalize]


def assert_scores_close(got, ref, scale):
  """Exported float32 scores against decision_function's: rtol 1e-5 and atol 1e-5 * max(1, scale),
  scale = max |score| of the test set. flow_ratio's scores near 0 are differences of two
  log-densities of ~10, so a relative tolerance alone cannot hold. Measured here: at most
  1.9e-5 apart (flow_ratio, standardize, scores up to 12), 1.6e-6 of max(1, scale)."""
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * max(1.0, scale))


@pytest.mark.parametrize("normalize", ["standardize", "sphere"])
@pytest.mark.parametrize("method", METHODS)
def test_exported_scores_equal_decision_function_for_any_batch(tmp_path, method, normalize):
  det = fitted(method, normalize)
  path = str(tmp_path / "scorer.npz")
  det.export(path)
  assert not os.path.exists(path + ".tmp")
  scorer = exported.load(path)
  ref = det.decision_function(TEST)
  scale = np.abs(ref).max()
  for n in (1, 7, 3000):
    got = scorer.decision_function(TEST[:n])
    assert got.shape == (n,)
    assert_scores_close(got, ref[:n], scale)
    # The bare program: float32 [n], any n (the batch dimension is symbolic).
    raw = np.asarray(scorer.program.call(TEST[:n].astype(np.float32)))
    assert raw.dtype == np.float32 and raw.shape == (n,)
    assert_scores_close(raw, ref[:n], scale)
  np.testing.assert_array_equal(scorer.calibration_scores_, det.calibration_scores_)
  np.testing.assert_array_equal(scorer.decision_scores_, det.decision_scores_)
  got_p = scorer.pvalues(TEST)
  np.testing.assert_array_equal(got_p, conformal_pvalues(det.calibration_scores_, scorer.decision_function(TEST)))
  assert np.mean(got_p != det.pvalues(TEST)) < 0.01   # only scores within float32 rounding of a calibration score differ
  meta = scorer.meta
  assert (meta["format"], meta["method"], meta["n_features_in"], meta["normalize"]) == (exported.FORMAT, method, 5,
                                                                                         normalize)
  assert (meta["kept_columns"], meta["constant_columns"], meta["platforms"]) == (
      [0, 1, 3, 4], [2], ["cpu", "cuda", "tpu"])
  assert meta["threshold"] == det.threshold_ and meta["contamination"] == det.contamination
  assert meta["eps"] == det.eps_ and meta["jax_version"] == __import__("jax").__version__


# Only numpy and jax: every other package the project uses is made unimportable first, and -I
# (isolated mode) ignores PYTHONPATH and the current directory.
STANDALONE = r"""
import json, sys
for name in ("cnf_jax", "flax", "sklearn", "ml_collections", "optax", "distrax", "orbax", "torch"):
  sys.modules[name] = None
import numpy as np, jax
f = np.load(sys.argv[1])
program = jax.export.deserialize(bytearray(f["program"].tobytes()))
scores = np.asarray(program.call(np.load(sys.argv[2]).astype(np.float32)))
cal = np.sort(f["calibration_scores"])
p = (1 + cal.size - np.searchsorted(cal, scores, side="left")) / (cal.size + 1)
print(json.dumps({"scores": scores.tolist(), "p": p.tolist(), "dtype": str(scores.dtype),
                  "loaded": sorted(m for m in ("cnf_jax", "flax", "sklearn") if sys.modules.get(m))}))
"""


@pytest.mark.parametrize("method", METHODS)
def test_the_exported_file_runs_with_only_numpy_and_jax(tmp_path, method):
  det = fitted(method)
  det.export(str(tmp_path / "scorer.npz"))
  np.save(tmp_path / "x.npy", TEST[:300])
  proc = subprocess.run([sys.executable, "-I", "-c", STANDALONE, "scorer.npz", "x.npy"], cwd=tmp_path,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["dtype"] == "float32" and out["loaded"] == []
  ref = det.decision_function(TEST)
  assert_scores_close(np.array(out["scores"]), ref[:300], np.abs(ref).max())
  # The 5-line p-value recipe is conformal_pvalues.
  np.testing.assert_array_equal(out["p"], conformal_pvalues(det.calibration_scores_, out["scores"]))


def test_input_errors_are_one_line(tmp_path):
  det = fitted("flow", "sphere")
  det.export(str(tmp_path / "scorer.npz"))
  scorer = exported.load(str(tmp_path / "scorer.npz"))
  zero = TEST[:3].copy()
  zero[1, [0, 1, 3, 4]] = 0.0    # all-zero on the scored columns (column 2 is dropped)
  nan = TEST[:3].copy()
  nan[2, 0] = np.nan
  for x, message in [(TEST[:, :4], "X has 4 features, but the exported scorer .* expects 5"),
                     (TEST[0], "expected a 2-D array"), (nan, "non-finite"),
                     (zero, "1 rows are all-zero and cannot be projected onto the sphere")]:
    with pytest.raises(UserInputError, match=message) as e:
      scorer.decision_function(x)
    assert "\n" not in str(e.value)


def test_a_missing_folder_or_a_folder_path_is_one_line_and_writes_nothing(tmp_path):
  det = fitted("flow")
  for write, what in ((det.export, "exported scorer"), (det.save, "detector")):
    with pytest.raises(UserInputError, match=f"cannot write the {what} to .*: the folder .*nowhere does not exist"):
      write(str(tmp_path / "nowhere" / "scorer.npz"))
    with pytest.raises(UserInputError, match=f"cannot write the {what} to .*: it is a folder"):
      write(str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == []


def test_platforms_and_an_uncalibrated_detector(tmp_path):
  det = fitted("cf")
  with pytest.raises(UserInputError, match="give one or more of cpu, cuda, rocm, tpu"):
    det.export(str(tmp_path / "bad.npz"), platforms=("cpu", "gpu"))
  assert not os.listdir(tmp_path)
  # One file for every platform; here only the CPU lowering runs.
  det.export(str(tmp_path / "all.npz"), platforms=("cpu", "cuda", "tpu"))
  scorer = exported.load(str(tmp_path / "all.npz"))
  assert scorer.program.platforms == ("cpu", "cuda", "tpu") and scorer.meta["platforms"] == ["cpu", "cuda", "tpu"]
  ref = det.decision_function(TEST)
  assert_scores_close(scorer.decision_function(TEST), ref, np.abs(ref).max())
  # A saved detector, loaded, exports the same scorer (the one-line hint for a saved file says so).
  det.save(str(tmp_path / "saved.npz"))
  ContrastiveFlowDetector.load(str(tmp_path / "saved.npz")).export(str(tmp_path / "again.npz"))
  np.testing.assert_array_equal(exported.load(str(tmp_path / "again.npz")).decision_function(TEST),
                                scorer.decision_function(TEST))
  # Without calibration rows the scores work and the p-values say what to do.
  det0 = ContrastiveFlowDetector(method="cf", calibration_fraction=0, **TINY).fit(X_TRAIN)
  det0.export(str(tmp_path / "nocal.npz"))
  scorer = exported.load(str(tmp_path / "nocal.npz"))
  assert scorer.decision_function(TEST[:5]).shape == (5,)
  with pytest.raises(UserInputError, match="no calibration scores .* call det.calibrate"):
    scorer.pvalues(TEST[:5])


def test_a_program_runs_on_the_default_device_or_a_platform_it_was_lowered_for():
  default = jax.devices()[0]
  assert exported.run_device(("cpu", "cuda", "tpu")) == default
  # A CPU-only file is scored on the CPU, also where the default backend is a GPU.
  assert exported.run_device(("cpu",)).platform == "cpu"
  if default.platform == "tpu":
    return
  with pytest.raises(UserInputError, match="runs on tpu, and this jax has none of them .* export it again"):
    exported.run_device(("tpu",))


def damaged_files(tmp_path):
  """{what: (path, expected message)} of files that are not a loadable exported scorer."""
  det = fitted("cf")
  good = tmp_path / "good.npz"
  det.export(str(good))
  data = good.read_bytes()
  files = {}

  def add(name, content, message):
    (tmp_path / name).write_bytes(content)
    files[name] = (str(tmp_path / name), message)

  add("truncated.npz", data[:len(data) // 2], "is not a readable .npz file")
  middle = len(data) // 2
  add("garbled.npz", data[:middle] + bytes(b ^ 0x5A for b in data[middle:middle + 64]) + data[middle + 64:],
      "damaged|not a readable")
  add("text.npz", b"id,score\n1,2\n", "is not a readable .npz file")
  with np.load(good) as f:
    arrays = {k: f[k] for k in f.files}
  # A valid .npz whose program bytes were changed (such a program may still run, with other weights).
  program = arrays["program"].copy()
  program[-4000:-3984] ^= 0x5A
  np.savez(tmp_path / "program.npz", **dict(arrays, program=program))
  files["program.npz"] = (str(tmp_path / "program.npz"), "the program does not match its recorded sha256")
  # Bytes that match their hash but are no program (as a program from a far newer jax would fail).
  junk = np.frombuffer(b"not a jax.export program", np.uint8)
  meta = dict(json.loads(str(arrays["meta"])), program_sha256=hashlib.sha256(junk.tobytes()).hexdigest())
  np.savez(tmp_path / "junk.npz", **dict(arrays, program=junk, meta=np.array(json.dumps(meta))))
  files["junk.npz"] = (str(tmp_path / "junk.npz"), r"the program does not deserialise with jax .* \(exported with jax")
  np.savez(tmp_path / "plain.npz", features=TEST[:3])
  files["plain.npz"] = (str(tmp_path / "plain.npz"), "is not an exported scorer")
  det.save(str(tmp_path / "saved.npz"))
  files["saved.npz"] = (str(tmp_path / "saved.npz"), r"is a saved detector \(det.save\), not an exported scorer")
  files["missing.npz"] = (str(tmp_path / "missing.npz"), "cannot be read")
  return files


def test_damaged_or_foreign_files_are_one_line(tmp_path):
  for name, (path, message) in damaged_files(tmp_path).items():
    with pytest.raises(UserInputError, match=message) as e:
      exported.load(path)
    assert "\n" not in str(e.value), name


# ---- python -m cnf_jax.score --detector ---------------------------------------------------------

@pytest.fixture(scope="module")
def scorer_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("export") / "scorer.npz"
  fitted("cf").export(str(path))
  return path


def test_score_cli_with_an_exported_detector(scorer_file, tmp_path):
  det = fitted("cf")
  x, labels = TEST[1400:1700], IS_ANOMALY[1400:1700]   # 100 inliers, 200 anomalies
  # A `backbone` entry is not checked: the exported scorer does not know its features' backbone.
  np.savez(tmp_path / "new.npz", features=x, ids=np.array([f"r{i}" for i in range(len(x))]),
           is_anomaly=labels.astype(np.int8), backbone=np.array("effnet_lite0"))
  proc = run_score(f"--detector={scorer_file}", f"--input={tmp_path / 'new.npz'}", f"--out={tmp_path / 's.csv'}",
                   "--alpha=0.1", "--quiet")
  assert proc.returncode == 0, proc.stderr[-2000:]
  ids, scores, p, flagged = read_scores(tmp_path / "s.csv")
  assert ids[:2] == ["r0", "r1"]
  ref = det.decision_function(TEST)
  assert_scores_close(scores, ref[1400:1700], np.abs(ref).max())
  np.testing.assert_array_equal(p, conformal_pvalues(det.calibration_scores_, scores))
  np.testing.assert_array_equal(flagged, (p <= 0.1).astype(int))
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  assert {k: summary[k] for k in ("out", "rows", "method", "alpha", "anomalies", "calibration_inliers")} == {
      "out": str(tmp_path / "s.csv"), "rows": 300, "method": "cf", "alpha": 0.1, "anomalies": int(flagged.sum()),
      "calibration_inliers": det.calibration_scores_.size}
  for name, fn in metrics.METRICS.items():
    assert summary[name] == pytest.approx(fn(scores, labels), abs=1e-12), name
  assert summary["auroc"] > 0.9 and summary["labelled_anomalies"] == 200
  assert summary["detection_rate"] == pytest.approx(flagged[labels].mean())
  # The same rows as a .csv with an id column: the same CSV out.
  with open(tmp_path / "new.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["id"] + [f"x{j}" for j in range(5)])
    w.writerows([[f"r{i}"] + [repr(float(v)) for v in row.astype(np.float32)] for i, row in enumerate(x)])
  proc = run_score(f"--detector={scorer_file}", f"--input={tmp_path / 'new.csv'}", f"--out={tmp_path / 't.csv'}",
                   "--alpha=0.1", "--quiet")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (tmp_path / "t.csv").read_text() == (tmp_path / "s.csv").read_text()


def test_score_cli_errors_with_detector_are_one_line_and_write_nothing(scorer_file, tmp_path):
  np.savez(tmp_path / "x.npz", features=TEST[:10])
  np.savez(tmp_path / "x4.npz", features=TEST[:10, :4])
  (tmp_path / "images").mkdir()
  nocal = tmp_path / "nocal.npz"
  ContrastiveFlowDetector(method="cf", calibration_fraction=0, **TINY).fit(X_TRAIN).export(str(nocal))
  (tmp_path / "damaged").mkdir()
  damaged = damaged_files(tmp_path / "damaged")
  x = f"--input={tmp_path / 'x.npz'}"
  cases = [
      ([f"--workdir={tmp_path}", f"--detector={scorer_file}", x],
       "error: give --workdir=<finished run> or --detector=<exported scorer .npz>, not both"),
      ([x], "error: --workdir (a finished run) or --detector (an exported scorer .npz, "
            "ContrastiveFlowDetector.export) is required"),
      ([f"--detector={scorer_file}", f"--input={tmp_path / 'images'}"],
       f"error: --input {tmp_path / 'images'}: the exported scorer {scorer_file} scores feature vectors and has no "
       "backbone for images; extract their features (python -m cnf_jax.extract) and pass the .npz"),
      ([f"--detector={scorer_file}", f"--input={tmp_path / 'x4.npz'}"],
       f"error: {tmp_path / 'x4.npz'} has 4 features, but the exported scorer {scorer_file} expects 5 "
       "(the fitted detector's n_features_in_)"),
      ([f"--detector={scorer_file}", x, "--method=flow"],
       f"error: --method='flow': the exported scorer {scorer_file} scores with method 'cf' only"),
      ([f"--detector={nocal}", x],
       f"error: {nocal} has no calibration scores (the detector was fitted with calibration_fraction=0); "
       "call det.calibrate(X_inliers), then export again"),
      ([f"--detector={damaged['saved.npz'][0]}", x],
       f"error: {damaged['saved.npz'][0]} is a saved detector (det.save), not an exported scorer; export it with "
       "ContrastiveFlowDetector.load(path).export(new_path)"),
      ([f"--detector={damaged['garbled.npz'][0]}", x], None),
      ([f"--detector={damaged['program.npz'][0]}", x], None),
      ([f"--detector={damaged['junk.npz'][0]}", x], None),
  ]
  out = tmp_path / "s.csv"
  for args, expected in cases:
    proc = run_score(*args, f"--out={out}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (args, proc.stderr[-2000:])
    assert lines[-1].startswith("error: ") and "Traceback" not in proc.stderr, (args, proc.stderr[-2000:])
    if expected is not None:
      assert lines[-1] == expected
    assert not out.exists() and not os.path.exists(f"{out}.tmp"), args
