"""The image-feature table configs (CIFAR-100 superclasses, CelebA, dataset-vs-dataset) end to end.

Real TFDS data cannot be downloaded here: the tests run each config's runlocal
variant on small made-up feature datasets in the extractor's format, and the
CIFAR-100 one on features the extractor made from `tfds.testing.mock_data`.
"""
import json
import os
import shutil

import numpy as np
import pytest

from cnf_jax.data import feature_dataset as fd
from cnf_jax.errors import UserInputError
from cnf_jax.experiments import config_lib
from cnf_jax.experiments import experiment
from cnf_jax.experiments import sweep
from cnf_jax.tasks.oneclass import CIFAR100_SUPERCLASSES
from cli_util import run_main
from conftest import CONFIGS
import feature_util


def _config(name, arg):
  return config_lib.load_config_module(os.path.join(CONFIGS, f"{name}.py")).get_config(arg)


def _small(name, arg):
  """The config for these tests' mock sets of a dozen inliers per class: with ',paper' (PyOD's k = 5
  and 20), since the label-free choices' k = 50 needs 50 inliers (an error otherwise)."""
  return _config(name, f"{arg},paper")


def test_cifar100_superclass_on_features_the_extractor_made_from_mock_tfds(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  from cnf_jax.extract import __main__ as extract_cli  # needs torch, as the extractor does
  root = tmp_path / "features"
  with tfds.testing.mock_data(num_examples=160):
    for split in ("train", "test"):
      # 2x2 pixels -> 12-d features; the mock's coarse label names are '0'..'19'.
      assert extract_cli.main(["--source=tfds:cifar100", f"--split={split}", "--backbone=pixels",
                               "--resolution=2", "--no_progress",
                               f"--out={root}/cifar100-{split}-{feature_util.BACKBONE}"]) == 0
  feature_util.write_tiny_imagenet(root, dim=12)
  from cnf_jax.data import feature_dataset as fd
  train = fd.load(f"{root}/cifar100-train-toy")
  test = fd.load(f"{root}/cifar100-test-toy")
  assert train.metadata["coarse_class_names"] == [str(i) for i in range(20)]
  k = int(np.bincount(train.coarse_labels, minlength=20).argmax())
  name = CIFAR100_SUPERCLASSES[k]

  config = feature_util.configure(_small("cifar100", f"{name},runlocal"), root)
  workdir = tmp_path / "run"
  results = experiment.train_and_evaluate(config, str(workdir))
  assert results["inlier_class"] == name
  assert results["num_inliers"] == int((train.coarse_labels == k).sum())
  assert results["num_test_anomalies"] == int((test.coarse_labels != k).sum())
  # One AUROC per other superclass present in the test split, named by CIFAR-100's coarse names.
  present = {CIFAR100_SUPERCLASSES[c] for c in np.unique(test.coarse_labels) if c != k}
  assert set(results["auroc_by_group"]) == present
  assert set(results["auroc"]) == set(config.methods.split(","))
  # test_index.npz maps every scored row back to its TFDS example.
  index = np.load(workdir / "test_index.npz")
  np.testing.assert_array_equal(index["index"], test.index)
  assert results["test_sources"] == ["tfds:cifar100:test"]
  assert len(np.load(workdir / "scores.npz")["score_cf"]) == len(test)


def _celeba(root, rng):
  for split, n in (("train", 120), ("test", 80)):
    male = (np.arange(n) % 3 == 0).astype(np.int64)
    feature_util.write(root, "celeb_a", split, feature_util.clusters(rng, male), np.zeros(n, np.int64),
                       class_names=["all"], attributes={"Male": male})


@pytest.mark.parametrize("side", ["female", "male"])
def test_celeba_one_side_against_the_other(tmp_path, side):
  rng = np.random.default_rng(0)
  root = tmp_path / "features"
  _celeba(root, rng)
  feature_util.write_tiny_imagenet(root)
  config = feature_util.configure(_small("celeba", f"{side},runlocal"), root)
  results = experiment.train_and_evaluate(config, str(tmp_path / "run"))
  n_male_train, n_male_test = 40, 27   # every third example
  assert results["num_inliers"] == (n_male_train if side == "male" else 120 - n_male_train)
  assert results["num_test_anomalies"] == (80 - n_male_test if side == "male" else n_male_test)
  other = "female" if side == "male" else "male"
  assert list(results["auroc_by_group"]) == [other]
  # The two sides are separate clusters: the inlier density models rank the other side as anomalous
  # (flow_ratio also depends on where the contrastive density is, so it is not checked).
  assert results["auroc"]["cf"] > 0.9 and results["auroc"]["flow"] > 0.9, results["auroc"]


def test_celeba_from_a_folder_split_by_the_attribute(tmp_path):
  # The shared CelebA zip has one label folder per side (female/, male/) and no attribute columns:
  # the same run as with TFDS's Male attribute, from the fine labels.
  rng = np.random.default_rng(0)
  root, folder_root = tmp_path / "features", tmp_path / "folder_features"
  _celeba(root, rng)
  other_root = tmp_path / "other_features"
  for split in ("train", "test"):
    tfds_like = fd.load(fd.dataset_dir(str(root), "celeb_a", split, feature_util.BACKBONE))
    male = tfds_like.attributes["Male"]
    feature_util.write(folder_root, "celeb_a", split, tfds_like.features, male, class_names=["female", "male"])
    feature_util.write(other_root, "celeb_a", split, tfds_like.features, male, class_names=["a", "b"])
  for r in (root, folder_root, other_root):
    feature_util.write_tiny_imagenet(r)
  by_attribute = experiment.train_and_evaluate(feature_util.configure(_small("celeba", "male,runlocal"), root),
                                               str(tmp_path / "a"))
  by_folder = experiment.train_and_evaluate(feature_util.configure(_small("celeba", "male,runlocal"), folder_root),
                                            str(tmp_path / "b"))
  for key in ("num_inliers", "num_test_anomalies", "auroc", "auroc_by_group"):
    assert by_folder[key] == by_attribute[key], key
  # Other label folders are not taken for the attribute.
  with pytest.raises(UserInputError, match="has no attribute 'Male'"):
    experiment.train_and_evaluate(feature_util.configure(_small("celeba", "male,runlocal"), other_root),
                                  str(tmp_path / "c"))


def _dataset_vs_dataset_features(root, rng):
  names = ["c%d" % i for i in range(10)]
  for split, n in (("train", 200), ("test", 60)):
    y = np.arange(n) % 10
    feature_util.write(root, "cifar10", split, feature_util.clusters(rng, y), y, class_names=names,
                       source_detail=f"zip:/data/cifar10-jpeg.zip:{split}")
  for g, source in enumerate(("cifar100", "svhn_cropped", "celeb_a")):
    y = np.zeros(30 + 10 * g, np.int64)
    feature_util.write(root, source, "test", feature_util.clusters(rng, y, offset=g + 1), y, class_names=["x"],
                       index=np.arange(len(y)) * 2)
  feature_util.write_tiny_imagenet(root)


def test_dataset_vs_dataset_records_each_datasets_auroc(tmp_path):
  rng = np.random.default_rng(1)
  root = tmp_path / "features"
  _dataset_vs_dataset_features(root, rng)
  config = feature_util.configure(_small("dataset_vs_dataset", "cifar100,svhn,celeba,runlocal"), root)
  workdir = tmp_path / "run"
  results = experiment.train_and_evaluate(config, str(workdir))
  assert results["num_inliers"] == 200 and results["num_test"] == 60 + 30 + 40 + 50
  assert set(results["auroc_extra"]) == {"cifar100", "svhn_cropped", "celeb_a"}
  for name, by_method in results["auroc_extra"].items():
    assert set(by_method) == set(config.methods.split(","))
    # The extra set is the CIFAR-10 test set against that dataset alone: the same AUROC as its group.
    for m, v in by_method.items():
      assert v == pytest.approx(results["auroc_by_group"][name][m], abs=1e-9)
  index = np.load(workdir / "test_index.npz")
  assert results["test_sources"] == ["zip:/data/cifar10-jpeg.zip:test", "tfds:cifar100:test",
                                     "tfds:svhn_cropped:test", "tfds:celeb_a:test"]
  np.testing.assert_array_equal(index["source_id"], np.repeat([0, 1, 2, 3], [60, 30, 40, 50]))
  np.testing.assert_array_equal(index["index"], np.r_[np.arange(60), np.arange(30) * 2, np.arange(40) * 2,
                                                      np.arange(50) * 2])

  one = feature_util.configure(_small("dataset_vs_dataset", "svhn,runlocal"), root)
  assert one.data.anomaly_sources == "svhn_cropped" and "inlier_class" not in one.data


@pytest.mark.parametrize("config,arg,source", [
    ("cifar100", "people,runlocal", "tfds:cifar100"),
    ("celeba", "male,runlocal", "tfds:celeb_a"),
    ("dataset_vs_dataset", "svhn,runlocal", "tfds:svhn_cropped"),
])
def test_missing_features_name_the_path_and_the_extractor_command(tmp_path, config, arg, source):
  proc = run_main(f"--config=configs/{config}.py:{arg}", f"--config.data.features_root={tmp_path / 'none'}",
                  f"--workdir={tmp_path / 'w'}")
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
  assert len(lines) == 1 and "Traceback" not in proc.stderr
  msg = lines[0]
  dataset = {"tfds:cifar100": "cifar100-train", "tfds:celeb_a": "celeb_a-train",
             "tfds:svhn_cropped": "svhn_cropped-test"}[source]
  assert str(tmp_path / "none" / f"{dataset}-effnet_lite0_pca128") in msg
  assert f"python -m cnf_jax.extract --source={source} " in msg and "python -m cnf_jax.extract.pca" in msg
  # The contrastive set's command passes its images through the inliers' 32 px (data.check_pixels).
  tiny = tmp_path / "none" / "tiny_imagenet-train-effnet_lite0"
  assert f"{tiny}_pca128: produce it with" in msg
  assert f"--backbone=effnet_lite0 --bottleneck=32 --bottleneck_jpeg_quality=75 --out={tiny}," in msg


@pytest.mark.parametrize("config,settings", [("cifar100", 20), ("celeba", 2), ("dataset_vs_dataset", 1)])
def test_sweeps_are_settings_times_three_seeds_and_one_vmapped_program(config, settings):
  module = config_lib.load_config_module(os.path.join(CONFIGS, f"{config}.py"))
  runs = config_lib.declared_sweep(module)
  assert len(runs) == 3 * settings
  assert sorted({r.overrides["seed"] for r in runs}) == [0, 1, 2]
  configs = [r.config(module, "runlocal") for r in runs]
  assert sweep.group_runs(configs) == [list(range(3 * settings))]
  json.dumps(configs[0].to_dict())  # plain data


def test_bad_config_args():
  from cnf_jax.errors import UserInputError
  with pytest.raises(UserInputError, match="unknown argument.*'peple'"):
    _config("cifar100", "peple")
  with pytest.raises(UserInputError, match="':female' or ':male'"):
    _config("celeba", "runlocal")
  with pytest.raises(UserInputError, match="needs the anomaly dataset"):
    _config("dataset_vs_dataset", "runlocal")


def test_contrastive_features_of_another_resolution_are_refused(tmp_path):
  # 64 px Tiny ImageNet against 32 px CIFAR inliers: one line saying which set to rebuild and how.
  from cnf_jax.tasks import oneclass
  root = tmp_path / "features"
  rng = np.random.default_rng(0)
  names = ["airplane", "deer"]
  for split in ("train", "test"):
    y = np.repeat([0, 1], 12)
    feature_util.write(root, "cifar10", split, feature_util.clusters(rng, y), y, class_names=names,
                       extra_metadata={"effective_pixels": 32})
  feature_util.write_tiny_imagenet(root, extra_metadata={"effective_pixels": 64})
  config = feature_util.configure(_small("oneclass", "deer,runlocal"), root)
  with pytest.raises(UserInputError, match=r"tiny_imagenet-train-toy come from 64 px images, the inliers .* from "
                                           r"32 px ones: rebuild the contrastive set .*--bottleneck=32"):
    oneclass.load_data(config)
  config.data.check_pixels = False   # the user's explicit choice
  assert len(oneclass.load_data(config).contrastive) == 300
  config.data.check_pixels = True
  feature_util.write_tiny_imagenet(root / "same", extra_metadata={"effective_pixels": 32})
  for split in ("train", "test"):
    shutil.copytree(root / f"cifar10-{split}-toy", root / "same" / f"cifar10-{split}-toy")
  config.data.features_root = str(root / "same")
  assert len(oneclass.load_data(config).contrastive) == 300
