"""One-vs-rest on precomputed image features (paper 5.2.3, Table 1).

Inliers: the training features of one class of `data.inlier_source`
(CIFAR-10 by default); contrastive: the training features of
`data.contrastive_source` (Tiny ImageNet standing in for ImageNet); test: every
test feature, anomalies = the other classes. Per-class AUROCs (each other class
against the inliers alone, a row of Table 2) go to "auroc_by_group".

Contrastive mixtures (paper 5.3): `data.contrastive_mixture`, e.g.
"tiny_imagenet:0.9,cifar10/horse:0.1" (syntax in cnf_jax/data/mixture.py),
replaces the single contrastive source: `<dataset>` is all training features
of that feature dataset (subsampled by data.contrastive_limit), `<dataset>/<class>`
the training features of one class (first data.train_limit rows, as the
inliers). Naming the inlier class itself (contamination, 5.3.1) draws the very
training inliers, as the paper does. Empty: data.contrastive_source alone.

Feature datasets are written by the PyTorch extractor stage
(`python -m cnf_jax.extract`, install extra `[extract]`) into
<features_root>/<source>-<split>-<backbone>; a backbone named <name>_pca<k> is
<name>'s features projected by `python -m cnf_jax.extract.pca` onto k principal
components fitted on the contrastive (auxiliary) data.
"""
import os

import numpy as np

from cnf_jax.data import feature_dataset  # the extractor's format, read without torch or TF
from cnf_jax.data import mixture as mixture_lib
from cnf_jax.data.task_data import TaskData
from cnf_jax.errors import UserInputError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
# The extractor's source argument that produces each dataset.
EXTRACT_SOURCES = {"cifar10": "tfds:cifar10 (or ../shared/data/cifar10-jpeg.zip)",
                   "tiny_imagenet": "../shared/data/tiny-imagenet-200-subset-jpeg.zip"}


def _build_command(path: str, root: str, source: str, split: str, backbone: str) -> str:
  """The commands that produce the feature dataset at `path`."""
  base, _, pca = backbone.partition("_pca")
  extract = lambda src, spl: (f"python -m cnf_jax.extract --source={EXTRACT_SOURCES.get(src, src)} --split={spl} "
                              f"--backbone={base} --out={feature_dataset.dataset_dir(root, src, spl, base)}")
  if not pca:
    return extract(source, split)
  aux = feature_dataset.dataset_dir(root, "tiny_imagenet", "train", base)
  return (f"{extract(source, split)}, then python -m cnf_jax.extract.pca --fit={aux} --dims={pca} "
          f"--apply={feature_dataset.dataset_dir(root, source, split, base)}")


def _require(path: str, root: str, source: str, split: str, backbone: str) -> None:
  if not os.path.isdir(path):
    raise UserInputError(
        f"feature dataset not found: {path}. Produce it with: {_build_command(path, root, source, split, backbone)} "
        "(needs pip install -e '.[extract]'; benchmarks/make_features.sh builds all three), "
        "or set --config.data.features_root to where the features are")


def load_data(config) -> TaskData:
  d = config.data
  root = os.path.expanduser(d.features_root)
  paths = {
      "train": (feature_dataset.dataset_dir(root, d.inlier_source, "train", d.backbone), d.inlier_source, "train"),
      "test": (feature_dataset.dataset_dir(root, d.inlier_source, "test", d.backbone), d.inlier_source, "test"),
      "contrastive": (feature_dataset.dataset_dir(root, d.contrastive_source, d.contrastive_split, d.backbone),
                      d.contrastive_source, d.contrastive_split),
  }
  if d.get("contrastive_mixture"):
    del paths["contrastive"]  # the mixture names its own sources
  for path, source, split in paths.values():
    _require(path, root, source, split, d.backbone)
  train = feature_dataset.load(paths["train"][0])
  test = feature_dataset.load(paths["test"][0])
  class_names = list(train.metadata.get("class_names") or [])
  if d.inlier_class not in class_names:
    raise UserInputError(f"inlier class {d.inlier_class!r} is not in {paths['train'][0]} "
                         f"(classes: {', '.join(class_names)})")
  k = class_names.index(d.inlier_class)
  inliers = _class_rows(train, d.inlier_class, paths["train"][0], d.train_limit)
  mixture = None
  if d.get("contrastive_mixture"):
    loaded = {(d.inlier_source, "train"): train}
    con, mixture = mixture_lib.concatenate(
        [(name, weight, _source_rows(config, name, root, loaded)) for name, weight in
         mixture_lib.parse(d.contrastive_mixture)])
  else:
    con = _limit(feature_dataset.load(paths["contrastive"][0]).features, d.contrastive_limit, config.seed)
  test_x, test_y = test.features, test.labels
  if d.test_limit and len(test_x) > d.test_limit:
    pick = np.sort(np.random.default_rng([config.seed, 12]).choice(len(test_x), d.test_limit, replace=False))
    test_x, test_y = test_x[pick], test_y[pick]
  return TaskData(inliers=inliers, contrastive=con, test=test_x, test_is_anomaly=test_y != k,
                  test_group=test_y, group_names=class_names, contrastive_mixture=mixture)


def _limit(x: np.ndarray, limit: int, seed: int) -> np.ndarray:
  """At most `limit` rows of x (0 = all), a fixed random subset per seed."""
  if limit and len(x) > limit:
    x = x[np.sort(np.random.default_rng([seed, 11]).choice(len(x), limit, replace=False))]
  return x


def _class_rows(dataset, class_name: str, path: str, limit: int) -> np.ndarray:
  """The first `limit` (0 = all) rows of one class of a feature dataset."""
  names = list(dataset.metadata.get("class_names") or [])
  if class_name not in names:
    raise UserInputError(f"class {class_name!r} is not in {path} (classes: {', '.join(names)})")
  rows = dataset.features[dataset.labels == names.index(class_name)]
  return rows[:limit] if limit else rows


def _source_rows(config, name: str, root: str, loaded: dict) -> np.ndarray:
  """Training features of a mixture source: '<dataset>' (all) or '<dataset>/<class>'."""
  d = config.data
  dataset, _, class_name = name.partition("/")
  path = feature_dataset.dataset_dir(root, dataset, "train", d.backbone)
  if (dataset, "train") not in loaded:
    _require(path, root, dataset, "train", d.backbone)
    loaded[(dataset, "train")] = feature_dataset.load(path)
  if class_name:
    return _class_rows(loaded[(dataset, "train")], class_name, path, d.train_limit)
  return _limit(loaded[(dataset, "train")].features, d.contrastive_limit, config.seed)


def analyze(config, workdir, data, log_prob_fns, results) -> dict:
  return {"inlier_class": config.data.inlier_class}
