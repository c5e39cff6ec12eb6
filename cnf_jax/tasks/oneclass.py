"""One-vs-rest on precomputed image features (paper 5.2.3: Tables 1, 3 and 12).

Inliers: the training features of one class of `data.inlier_source`; the class
is read from the label column `data.label_field`:
  'label'             fine labels (CIFAR-10 classes, Table 1)
  'coarse_label'      coarse labels (CIFAR-100 superclasses, Table 12)
  'attributes/<name>' a 0/1 attribute, class names data.class_names = (value 0, value 1)
                      (CelebA 'attributes/Male': female, male; Table 3)
Contrastive: the training features of `data.contrastive_source` (Tiny ImageNet
standing in for ImageNet). Test: every test feature of the inlier source,
anomalies = the other classes. Per-class AUROCs (each other class against the
inliers alone, a row of Table 2) go to "auroc_by_group".

Contrastive mixtures (paper 5.3): `data.contrastive_mixture`, e.g.
"tiny_imagenet:0.9,cifar10/horse:0.1" (syntax in cnf_jax/data/mixture.py),
replaces the single contrastive source: `<dataset>` is all training features
of that feature dataset (subsampled by data.contrastive_limit), `<dataset>/<class>`
the training features of one class (first data.train_limit rows, as the
inliers). Naming the inlier class itself (contamination, 5.3.1) draws the very
training inliers, as the paper does. Empty: data.contrastive_source alone.

Feature datasets and the error for a missing one: see cnf_jax/tasks/features.py.
"""
import numpy as np

from cnf_jax.data.task_data import TaskData
from cnf_jax.errors import UserInputError
from cnf_jax.tasks import features

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
# CIFAR-100's 20 coarse labels in label order (TFDS and the original meta file); used to name
# them where a dataset only stores '0'..'19' (TFDS without its label files).
CIFAR100_SUPERCLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2")
EXTRACT_SOURCES = features.EXTRACT_SOURCES  # Kept for callers of the earlier module.


def load_data(config) -> TaskData:
  d = config.data
  field = d.get("label_field", "label")
  test_split = d.get("test_split", "test")
  mixed = bool(d.get("contrastive_mixture"))
  contrastive_sets = ([(dataset, "train") for dataset, _, _ in features.mixture_sources(config)] if mixed
                      else [(d.contrastive_source, d.contrastive_split)])
  features.require(config, [(d.inlier_source, "train"), (d.inlier_source, test_split)] + contrastive_sets)
  features.check_same_pixels(config, (d.inlier_source, "train"),
                             [pair for pair in contrastive_sets if pair[0] != d.inlier_source])
  train = features.load(config, d.inlier_source, "train")
  test = features.load(config, d.inlier_source, test_split)
  names_if_numeric = tuple(d.get("class_names", ()))
  train_y, class_names = features.labels_and_names(
      train, field, names_if_numeric, where=features.dataset_path(config, d.inlier_source, "train"))
  test_y, _ = features.labels_and_names(
      test, field, names_if_numeric, where=features.dataset_path(config, d.inlier_source, test_split))
  if d.inlier_class not in class_names:
    raise UserInputError(f"inlier class {d.inlier_class!r} is not in "
                         f"{features.dataset_path(config, d.inlier_source, 'train')} ({field}; classes: "
                         f"{', '.join(class_names)})")
  k = class_names.index(d.inlier_class)
  inliers = train.features[train_y == k]
  if d.train_limit and len(inliers) > d.train_limit:
    inliers = inliers[:d.train_limit]
  pick = features.random_subset(len(test), d.test_limit, config.seed, 12)
  rows = np.arange(len(test)) if pick is None else pick
  mixture = None
  if mixed:
    contrastive, mixture = features.mixture_features(config, {d.inlier_source: train})
  else:
    contrastive = features.contrastive_features(config)
  return TaskData(inliers=inliers, contrastive=contrastive, contrastive_mixture=mixture, test=test.features[rows],
                  test_is_anomaly=test_y[rows] != k, test_group=test_y[rows], group_names=class_names,
                  test_index=test.index[rows], test_source_id=np.zeros(len(rows), np.int64),
                  test_sources=[test.metadata.get("source_detail", d.inlier_source)])


def analyze(config, workdir, data, log_prob_fns, results) -> dict:
  out = {"inlier_class": config.data.inlier_class, "group_names": list(data.group_names)}
  if data.test_index is not None:
    out.update(features.write_test_index(workdir, data.test_sources, data.test_source_id, data.test_index))
  return out
