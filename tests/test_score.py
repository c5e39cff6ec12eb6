"""python -m cnf_jax.score on a finished run: same scores as the run, conformal p-values, formats."""
import csv
import json
import os
import sys

import numpy as np
import pytest

from conftest import CONFIGS
import score_util
from score_util import read_scores, run_score
from score_util import run, shared  # noqa: F401 (pytest fixtures: the shared finished run)


def test_cli_reproduces_the_runs_test_scores_with_conformal_pvalues(run, tmp_path):
  workdir, config = run
  test = np.load(config.data.path)["test"]
  np.savez(tmp_path / "new.npz", features=test, ids=np.array([f"row{i}" for i in range(len(test))]))
  proc = run_score(f"--workdir={workdir}", f"--input={tmp_path / 'new.npz'}", f"--out={tmp_path / 's.csv'}",
                   "--alpha=0.1")
  assert proc.returncode == 0, proc.stderr[-2000:]
  ids, scores, p, flagged = read_scores(tmp_path / "s.csv")
  # The reference is what the run itself wrote at evaluation (scores.npz), not cnf_jax.score's code.
  ref = np.load(os.path.join(workdir, "scores.npz"))
  assert ids[:2] == ["row0", "row1"]
  np.testing.assert_array_equal(scores, ref["score_cf"])   # same models, same preprocessing
  # The calibration set is the test inliers themselves here, so the k-th largest counts itself
  # and the k - 1 above it: p = (1 + k) / 51.
  inlier_p = np.sort(p[:50])
  np.testing.assert_allclose(inlier_p, np.arange(2, 52) / 51)
  # Every row's p-value from the definition, p = (1 + #{calibration scores >= s}) / (n + 1),
  # counted pairwise from the run's own scores.
  calibration = ref["score_cf"][ref["is_anomaly"] == 0]
  expected_p = (1 + (calibration[None, :] >= ref["score_cf"][:, None]).sum(1)) / (calibration.size + 1)
  np.testing.assert_allclose(p, expected_p)
  expected_flags = (expected_p <= 0.1).astype(int)
  np.testing.assert_array_equal(flagged, expected_flags)
  # 4 inliers have p <= 0.1 (2/51 ... 5/51); of the 50 anomalies the run flags 31 (measured). Scores
  # that do not separate them would flag about 4, so a broken model fails the bound of 15.
  assert expected_flags[50:].sum() >= 15, expected_flags
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  assert summary == {"out": str(tmp_path / "s.csv"), "rows": 100, "method": "cf", "alpha": 0.1,
                     "anomalies": int(expected_flags.sum()), "calibration_inliers": 50}


def test_labelled_input_adds_the_runs_auroc_aupr_and_fpr95(run, tmp_path):
  # The run's own test set with its labels: the summary's metrics are the run's results.json ones.
  workdir, config = run
  data = np.load(config.data.path)
  np.savez(tmp_path / "labelled.npz", features=data["test"], is_anomaly=data["test_is_anomaly"].astype(np.int8))
  proc = run_score(f"--workdir={workdir}", f"--input={tmp_path / 'labelled.npz'}", f"--out={tmp_path / 's.csv'}",
                   "--alpha=0.1", "--quiet")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "score cf" not in proc.stderr   # --quiet: no progress line
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  for metric in ("auroc", "aupr", "fpr95"):
    assert summary[metric] == pytest.approx(results[metric]["cf"], abs=1e-9), metric
  _, _, _, flagged = read_scores(tmp_path / "s.csv")
  is_anomaly = data["test_is_anomaly"].astype(bool)
  assert summary["labelled_anomalies"] == int(is_anomaly.sum())
  assert summary["false_alarm_rate"] == pytest.approx(flagged[~is_anomaly].mean())
  assert summary["detection_rate"] == pytest.approx(flagged[is_anomaly].mean()) and summary["detection_rate"] > 0.3
  # Without --quiet the (non-TTY) progress line ends with the time it took.
  loud = run_score(f"--workdir={workdir}", f"--input={tmp_path / 'labelled.npz'}", f"--out={tmp_path / 't.csv'}")
  assert loud.returncode == 0 and "score cf  100/100 rows" in loud.stderr and "took" in loud.stderr, loud.stderr


def test_bad_labels_in_a_csv_are_one_line(run, tmp_path):
  workdir, config = run
  test = np.load(config.data.path)["test"][:3]
  rows = "\n".join(",".join(map(str, r)) + f",{label}" for r, label in zip(test, ["0", "yes", "1"]))
  header = ",".join(f"x{j}" for j in range(test.shape[1])) + ",is_anomaly"
  (tmp_path / "bad.csv").write_text(header + "\n" + rows + "\n")
  proc = run_score(f"--workdir={workdir}", f"--input={tmp_path / 'bad.csv'}", f"--out={tmp_path / 's.csv'}")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (f"error: {tmp_path / 'bad.csv'}: line 3, column 'is_anomaly': "
                                                  "'yes' is not 0 or 1 (1 = anomaly)")
  assert not (tmp_path / "s.csv").exists()
  # Labels of another length than the features: refused before anything is written.
  np.savez(tmp_path / "short.npz", features=test, is_anomaly=np.array([0, 1]))
  proc = run_score(f"--workdir={workdir}", f"--input={tmp_path / 'short.npz'}", f"--out={tmp_path / 's.csv'}")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'short.npz'}: 2 is_anomaly labels for 3 feature rows"
  assert not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("method", ["flow", "flow_ratio"])
def test_csv_input_and_other_methods(run, tmp_path, method):
  from cnf_jax import score
  workdir, config = run
  test = np.load(config.data.path)["test"]
  with open(tmp_path / "t.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["a", "id", "b", "c"])    # the id column may sit anywhere
    w.writerows([[repr(float(r[0])), f"x{i}", repr(float(r[1])), repr(float(r[2]))]
                 for i, r in enumerate(test.astype(np.float32))])
  summary = score.score(workdir, str(tmp_path / "t.csv"), str(tmp_path / "s.csv"), method=method)
  assert summary["method"] == method
  ids, scores, _, _ = read_scores(tmp_path / "s.csv")
  assert ids[0] == "x0"
  np.testing.assert_array_equal(scores, np.load(os.path.join(workdir, "scores.npz"))[f"score_{method}"])


def test_without_preprocessing_json_the_stats_are_recomputed_from_the_run_data(run, tmp_path, capsys):
  from cnf_jax import score
  workdir, config = run
  np.savez(tmp_path / "new.npz", features=np.load(config.data.path)["test"])
  score.score(workdir, str(tmp_path / "new.npz"), str(tmp_path / "a.csv"))
  old_run = score_util.copy_run(workdir, tmp_path / "old_run")   # a run from before preprocessing.json
  os.remove(os.path.join(old_run, "preprocessing.json"))
  score.score(old_run, str(tmp_path / "new.npz"), str(tmp_path / "b.csv"))
  assert "preprocessing.json not found; recomputing" in capsys.readouterr().err   # the fallback ran
  assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_preprocessing_save_load_round_trip(tmp_path):
  from cnf_jax.data import preprocessing
  x = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32) * 7 + 3
  stats = preprocessing.fit(x, "standardize")
  preprocessing.save(str(tmp_path / "p.json"), "standardize", stats)
  method, loaded = preprocessing.load(str(tmp_path / "p.json"))
  assert method == "standardize" and not (tmp_path / "p.json.tmp").exists()
  np.testing.assert_array_equal(preprocessing.apply(x, method, loaded), preprocessing.apply(x, "standardize", stats))


@pytest.mark.parametrize("backbone", ["pixels", "pixels_pca8"])
def test_image_folder_and_zip_are_scored_through_the_runs_backbone(tmp_path, backbone):
  """A run on features of 4x4 images; images scored by path give the scores of their features.

  'pixels': [0, 1] pixels in (C, H, W) order. 'pixels_pca8': those projected by a PCA
  stored, as the extractor's PCA stage stores it, in the run's training feature directory.
  """
  import zipfile
  from PIL import Image
  from cnf_jax import score
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(300, 4, 4, 3), dtype=np.uint8)
  feats = images.transpose(0, 3, 1, 2).reshape(300, -1) / 255.0
  extra = {"backbone": backbone}
  if backbone.endswith("_pca8"):
    aux = rng.uniform(size=(500, 48))
    mean = aux.mean(0)
    components = np.linalg.svd(aux - mean, full_matrices=False)[2][:8]
    train_dir = tmp_path / "features" / "src-train-pixels_pca8"
    train_dir.mkdir(parents=True)
    np.savez(train_dir / "transform.npz", mean=mean.astype(np.float32), components=components.astype(np.float32))
    feats = ((feats.astype(np.float32) - mean.astype(np.float32)) @ components.astype(np.float32).T)
    extra.update(features_root=str(tmp_path / "features"), inlier_source="src")
  dim = feats.shape[1]
  np.savez(tmp_path / "f.npz", inliers=feats[:200], contrastive=rng.normal(size=(200, dim)), test=feats[200:],
           test_is_anomaly=np.repeat([0, 1], 50))
  sys.path.insert(0, CONFIGS)
  import npz as npz_config
  from cnf_jax.experiments import experiment
  config = npz_config.get_config("runlocal")
  config.data.path = str(tmp_path / "f.npz")
  experiment.train_and_evaluate(config, str(tmp_path / "run"))
  # An image run records its backbone (and feature root) in config.data; the npz task has none, so add them.
  saved = json.loads((tmp_path / "run" / "config.json").read_text())
  saved["data"].update(extra)
  (tmp_path / "run" / "config.json").write_text(json.dumps(saved))

  (tmp_path / "new").mkdir()
  with zipfile.ZipFile(tmp_path / "new.zip", "w") as z:
    for i in range(10):
      Image.fromarray(images[200 + i]).save(tmp_path / "new" / f"im{i}.png")
      z.write(tmp_path / "new" / f"im{i}.png", f"im{i}.png")
  np.savez(tmp_path / "new.npz", features=feats[200:210])
  for name in ("new", "new.zip", "new.npz"):
    score.score(str(tmp_path / "run"), str(tmp_path / name), str(tmp_path / f"{name}.csv"), resolution=4)
  ids, by_path, _, _ = read_scores(tmp_path / "new.csv")
  assert ids == [f"im{i}.png" for i in range(10)]
  # Same features up to float32 rounding of the PCA matmul (numpy here, the extractor's code there).
  np.testing.assert_allclose(by_path, read_scores(tmp_path / "new.npz.csv")[1], rtol=1e-5)
  np.testing.assert_array_equal(read_scores(tmp_path / "new.zip.csv")[1], by_path)
