"""PCA fitted on auxiliary features and stored with every transformed dataset."""
import os

import numpy as np
import pytest

from cnf_jax.data import feature_dataset as fd
from cnf_jax.extract import pca


def test_pca_recovers_a_low_rank_subspace_and_is_stored_with_each_split(tmp_path, capsys):
  rng = np.random.default_rng(0)
  basis = np.linalg.qr(rng.normal(size=(10, 3)))[0].T  # 3 orthonormal directions in 10-d.
  def sample(n):
    return (rng.normal(size=(n, 3)) * [5.0, 3.0, 2.0]) @ basis + 1.0 + 0.01 * rng.normal(size=(n, 10))
  root = str(tmp_path)
  aux, test = fd.dataset_dir(root, "aux", "train", "toy"), fd.dataset_dir(root, "cifar10", "test", "toy")
  meta = {"class_names": ["a"], "backbone": "toy"}
  fd.write(aux, sample(400), np.zeros(400), np.arange(400), metadata=meta)
  x_test = sample(50)
  fd.write(test, x_test, np.zeros(50), np.arange(50), metadata=meta, split="test")
  assert pca.main([f"--fit={aux}", "--apply", test, "--dims=3"]) == 0
  out_aux, out_test = fd.dataset_dir(root, "aux", "train", "toy_pca3"), fd.dataset_dir(root, "cifar10", "test", "toy_pca3")
  assert capsys.readouterr().out.split() == [out_aux, out_test]
  fs = fd.load(out_test)
  assert fs.features.shape == (50, 3) and fs.metadata["backbone"] == "toy_pca3" and fs.metadata["split"] == "test"
  assert fs.metadata["transform"]["explained_variance_ratio"] > 0.999
  t_aux, t_test = fd.load_transform(out_aux), fd.load_transform(out_test)
  np.testing.assert_array_equal(t_aux["components"], t_test["components"])
  # The projection keeps the data up to the noise: reconstructing from 3 dims is accurate.
  recon = fs.features @ t_test["components"] + t_test["mean"]
  assert np.abs(recon - x_test).max() < 0.1
  np.testing.assert_allclose(t_test["components"] @ t_test["components"].T, np.eye(3), atol=1e-5)

  # A rerun with one more dataset keeps the existing ones and maps the new one with the PCA
  # already fitted, even when the aux features changed since (it is not refitted).
  later = fd.dataset_dir(root, "svhn", "test", "toy")
  fd.write(later, x_test[:20], np.zeros(20), np.arange(20), metadata=meta, split="test")
  fd.write(aux, sample(400), np.zeros(400), np.arange(400), metadata=meta, overwrite=True)
  before = os.path.getmtime(os.path.join(out_test, fd.METADATA_FILE))
  assert pca.main([f"--fit={aux}", f"--apply={test},{later}", "--dims=3"]) == 0
  out_later = fd.dataset_dir(root, "svhn", "test", "toy_pca3")
  assert capsys.readouterr().out.split() == [out_aux, out_test, out_later]
  assert os.path.getmtime(os.path.join(out_test, fd.METADATA_FILE)) == before
  np.testing.assert_array_equal(fd.load_transform(out_later)["components"], t_aux["components"])
  np.testing.assert_allclose(fd.load(out_later).features, fs.features[:20], atol=1e-6)


def test_pca_bad_dims_exits_2(tmp_path, capsys):
  path = os.path.join(str(tmp_path), "aux")
  fd.write(path, np.ones((5, 4)), np.zeros(5), np.arange(5), metadata={"class_names": ["a"]})
  assert pca.main([f"--fit={path}", "--dims=9"]) == 2
  assert "--dims must be in 1..4" in capsys.readouterr().err
  assert pca.main(["--dims=3"]) == 2 and capsys.readouterr().err.startswith("error: --fit is required")
  assert pca.main([f"--fit={path}", "--dims=three"]) == 2
  assert capsys.readouterr().err.startswith("error: flag --dims=three: invalid literal for int()")
  with pytest.raises(Exception, match="dim 3 but the PCA was fitted on dim 4"):
    pca.apply_pca(np.ones((2, 3)), pca.fit_pca(np.random.default_rng(0).normal(size=(5, 4)), 2))
