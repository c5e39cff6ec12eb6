"""One-vs-rest on precomputed image features (paper 5.2.3, Table 1).

Inliers: the training features of one class of `data.inlier_source`
(CIFAR-10 by default); contrastive: the training features of
`data.contrastive_source` (Tiny ImageNet standing in for ImageNet); test: every
test feature, anomalies = the other classes. Per-class AUROCs (each other class
against the inliers alone, a row of Table 2) go to "auroc_by_group".

Feature datasets are written by the PyTorch extractor stage
(`python -m cnf_jax.extract`, install extra `[extract]`) into
<features_root>/<source>-<split>-<backbone>; a backbone named <name>_pca<k> is
<name>'s features projected by `python -m cnf_jax.extract.pca` onto k principal
components fitted on the contrastive (auxiliary) data.
"""
import os

import numpy as np

from cnf_jax.data import feature_dataset  # the extractor's format, read without torch or TF
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
  for path, source, split in paths.values():
    _require(path, root, source, split, d.backbone)
  train = feature_dataset.load(paths["train"][0])
  test = feature_dataset.load(paths["test"][0])
  contrastive = feature_dataset.load(paths["contrastive"][0])

  class_names = list(train.metadata.get("class_names") or [])
  if d.inlier_class not in class_names:
    raise UserInputError(f"inlier class {d.inlier_class!r} is not in {paths['train'][0]} "
                         f"(classes: {', '.join(class_names)})")
  k = class_names.index(d.inlier_class)
  inliers = train.features[train.labels == k]
  con = contrastive.features
  if d.contrastive_limit and len(con) > d.contrastive_limit:
    pick = np.random.default_rng([config.seed, 11]).choice(len(con), d.contrastive_limit, replace=False)
    con = con[np.sort(pick)]
  if d.train_limit and len(inliers) > d.train_limit:
    inliers = inliers[:d.train_limit]
  test_x, test_y = test.features, test.labels
  if d.test_limit and len(test_x) > d.test_limit:
    pick = np.sort(np.random.default_rng([config.seed, 12]).choice(len(test_x), d.test_limit, replace=False))
    test_x, test_y = test_x[pick], test_y[pick]
  return TaskData(inliers=inliers, contrastive=con, test=test_x, test_is_anomaly=test_y != k,
                  test_group=test_y, group_names=class_names)


def analyze(config, workdir, data, log_prob_fns, results) -> dict:
  return {"inlier_class": config.data.inlier_class}
