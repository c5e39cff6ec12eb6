"""Shared by the image-feature tasks: finding feature datasets, their labels, and the test index.

Feature datasets are written by the PyTorch extractor stage
(`python -m cnf_jax.extract`, install extra `[extract]`) into
<features_root>/<source>-<split>-<backbone>; a backbone named <name>_pca<k> is
<name>'s features projected by `python -m cnf_jax.extract.pca` onto k principal
components fitted on the contrastive (auxiliary) data. A missing dataset is an
error that names its path and the commands that build it.

Every run of these tasks writes <workdir>/test_index.npz (`write_test_index`):
for each row of scores.npz, the dataset it came from and its position in that
dataset's image source, so that the report can show the test images themselves.
"""
import json
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from cnf_jax.data import feature_dataset
from cnf_jax.data import mixture as mixture_lib
from cnf_jax.errors import UserInputError
from cnf_jax.files import atomic_write

# The extractor's --source argument that produces each dataset (name = the extractor's default
# --source_name, i.e. the TFDS name or the zip's base name).
EXTRACT_SOURCES = {"cifar10": "tfds:cifar10 (or ../shared/data/cifar10-jpeg.zip)",
                   "tiny_imagenet": "../shared/data/tiny-imagenet-200-subset-jpeg.zip",
                   "cifar100": "tfds:cifar100 (or ../shared/data/cifar100-subset-jpeg.zip --source_name=cifar100)",
                   "svhn_cropped": "tfds:svhn_cropped (or ../shared/data/svhn-test10k-jpeg.zip "
                                   "--source_name=svhn_cropped)",
                   "celeb_a": "tfds:celeb_a (or ../shared/data/celeba-subset6000-jpeg.zip --source_name=celeb_a)"}
TEST_INDEX_FILE = "test_index.npz"


# Extractor flags of sources whose images are finer than CIFAR's 32 px: they pass through that
# resolution (JPEG as the CIFAR zip) so that a flow cannot tell the sets apart by blur; the
# one-class configs check it (data.check_pixels). As benchmarks/make_features.sh and
# benchmarks/make_table_features.sh build them.
_THROUGH_32PX = " --bottleneck=32 --bottleneck_jpeg_quality=75"
EXTRACT_FLAGS = {"tiny_imagenet": _THROUGH_32PX, "celeb_a": _THROUGH_32PX}


def build_command(root: str, source: str, split: str, backbone: str) -> str:
  """The commands that produce the feature dataset of (source, split, backbone) under root."""
  base, _, pca = backbone.partition("_pca")
  extract = lambda src, spl: (f"python -m cnf_jax.extract --source={EXTRACT_SOURCES.get(src, src)} --split={spl} "
                              f"--backbone={base}{EXTRACT_FLAGS.get(src, '')} "
                              f"--out={feature_dataset.dataset_dir(root, src, spl, base)}")
  if not pca:
    return extract(source, split)
  aux = feature_dataset.dataset_dir(root, "tiny_imagenet", "train", base)
  return (f"{extract(source, split)}, then python -m cnf_jax.extract.pca --fit={aux} --dims={pca} "
          f"--apply={feature_dataset.dataset_dir(root, source, split, base)}")


def dataset_path(config, source: str, split: str) -> str:
  d = config.data
  return feature_dataset.dataset_dir(os.path.expanduser(d.features_root), source, split, d.backbone)


def require(config, pairs: Sequence[Tuple[str, str]]) -> None:
  """Raises one UserInputError naming every missing (source, split) dataset and its build command."""
  root = os.path.expanduser(config.data.features_root)
  missing = [(dataset_path(config, s, sp), s, sp) for s, sp in pairs if not os.path.isdir(dataset_path(config, s, sp))]
  if not missing:
    return
  lines = "; ".join(f"{path}: produce it with {build_command(root, s, sp, config.data.backbone)}"
                    for path, s, sp in missing)
  raise UserInputError(
      f"feature dataset not found: {lines} (needs pip install -e '.[extract]'; tfds: sources need the TFDS "
      "data prepared, pass --data_dir; benchmarks/make_features.sh builds the CIFAR-10 ones), "
      "or set --config.data.features_root to where the features are")


def load(config, source: str, split: str) -> feature_dataset.FeatureSet:
  # Cached: every run of a sweep in this process reads the same datasets.
  return feature_dataset.load_cached(dataset_path(config, source, split))


def effective_pixels(config, source: str, split: str) -> Optional[int]:
  """The finest resolution the images of a feature dataset had on their way to the backbone
  (metadata.json's effective_pixels: their native size or the extractor's --bottleneck), or
  None for datasets written before the extractor recorded it."""
  path = os.path.join(dataset_path(config, source, split), feature_dataset.METADATA_FILE)
  try:
    with open(path) as f:
      return json.load(f).get("effective_pixels")
  except (OSError, ValueError):
    return None


def check_same_pixels(config, inliers: Tuple[str, str], contrastive: Sequence[Tuple[str, str]]) -> None:
  """UserInputError when a contrastive dataset reached the backbone at another resolution than
  the inliers (e.g. 64 px Tiny ImageNet against 32 px CIFAR): a flow then separates the two by
  blur and JPEG artefacts instead of content, and CF learns little. Datasets without the record
  (older extractions) are not checked. data.check_pixels=False turns the check off."""
  if not config.data.get("check_pixels", True):
    return
  want = effective_pixels(config, *inliers)
  if want is None:
    return
  for source, split in contrastive:
    got = effective_pixels(config, source, split)
    if got is not None and got != want:
      finer = "contrastive" if got > want else "inlier"
      raise UserInputError(
          f"contrastive features {dataset_path(config, source, split)} come from {got} px images, the inliers "
          f"{dataset_path(config, *inliers)} from {want} px ones: rebuild the {finer} set through the coarser "
          f"resolution (python -m cnf_jax.extract ... --bottleneck={min(got, want)}; benchmarks/make_features.sh "
          "does it for Tiny ImageNet), or set --config.data.check_pixels=False to compare them anyway")


def labels_and_names(fs: feature_dataset.FeatureSet, field: str, names_if_numeric: Sequence[str] = (),
                     where: str = "") -> Tuple[np.ndarray, List[str]]:
  """The label column `field` of a feature set [N] and its class names.

  field: 'label' (fine labels), 'coarse_label', or 'attributes/<name>' (a 0/1
  attribute; names_if_numeric gives the names of values 0 and 1; a dataset without the
  attribute whose label folders are exactly those two names uses its fine labels). Datasets whose
  class names are just '0', '1', ... (TFDS without its label files, mock data)
  get `names_if_numeric` when they have as many classes.
  """
  meta = fs.metadata
  if field == "label":
    labels, names = fs.labels, list(meta.get("class_names") or [])
  elif field == "coarse_label":
    if fs.coarse_labels is None:
      raise UserInputError(f"{where} has no coarse labels (its source has none); extract it from a source "
                           "with coarse labels, e.g. tfds:cifar100")
    labels, names = fs.coarse_labels, list(meta.get("coarse_class_names") or [])
  elif field.startswith("attributes/") and field[len("attributes/"):] not in fs.attributes and \
      len(names_if_numeric) == 2 and list(meta.get("class_names") or []) == list(names_if_numeric):
    # An image folder / zip split by the attribute into one label folder per value (as the shared
    # CelebA subset's female/ and male/): its fine labels are the attribute.
    labels, names = fs.labels, list(names_if_numeric)
  elif field.startswith("attributes/"):
    attr = field[len("attributes/"):]
    if attr not in fs.attributes:
      raise UserInputError(f"{where} has no attribute {attr!r} (attributes: "
                           f"{', '.join(sorted(fs.attributes)) or 'none'}); extract it from tfds:celeb_a")
    labels = (fs.attributes[attr] != 0).astype(np.int64)
    names = list(names_if_numeric) if len(names_if_numeric) == 2 else [f"not_{attr}", attr]
  else:
    raise UserInputError(f"config data.label_field={field!r} is not valid; choose label, coarse_label or "
                         "attributes/<name>")
  if names_if_numeric and len(names) == len(names_if_numeric) and all(n.isdigit() for n in names):
    names = list(names_if_numeric)
  return labels, names


def random_subset(n: int, limit: int, seed: int, stream: int) -> Optional[np.ndarray]:
  """Sorted indices of `limit` of n rows drawn with (seed, stream), or None to keep all."""
  if not limit or n <= limit:
    return None
  return np.sort(np.random.default_rng([seed, stream]).choice(n, limit, replace=False))


def contrastive_features(config) -> np.ndarray:
  d = config.data
  con = load(config, d.contrastive_source, d.contrastive_split).features
  pick = random_subset(len(con), d.contrastive_limit, config.seed, 11)
  return con if pick is None else con[pick]


def mixture_sources(config) -> List[Tuple[str, str, float]]:
  """[(dataset, class or '', weight)] of data.contrastive_mixture (see cnf_jax/data/mixture.py)."""
  return [(name.partition("/")[0], name.partition("/")[2], weight)
          for name, weight in mixture_lib.parse(config.data.contrastive_mixture)]


def mixture_features(config, loaded: dict) -> Tuple[np.ndarray, "mixture_lib.Mixture"]:
  """The contrastive rows of data.contrastive_mixture [M, D] (sources concatenated) and its Mixture.

  '<dataset>': all training features of the dataset (subsampled by data.contrastive_limit);
  '<dataset>/<class>': that class's training features, the first data.train_limit as for the
  inliers (labels from data.label_field for the inlier dataset, fine labels otherwise), so
  naming the inlier class gives exactly the training inliers. loaded: {dataset: FeatureSet}
  already read (filled in).
  """
  d = config.data
  parts = []
  for dataset, class_name, weight in mixture_sources(config):
    if dataset not in loaded:
      loaded[dataset] = load(config, dataset, "train")
    fs, where = loaded[dataset], dataset_path(config, dataset, "train")
    if class_name:
      field = d.get("label_field", "label") if dataset == d.inlier_source else "label"
      names_if_numeric = tuple(d.get("class_names", ())) if dataset == d.inlier_source else ()
      labels, names = labels_and_names(fs, field, names_if_numeric, where=where)
      if class_name not in names:
        raise UserInputError(f"contrastive mixture: class {class_name!r} is not in {where} ({field}; classes: "
                             f"{', '.join(names)})")
      rows = fs.features[labels == names.index(class_name)]
      rows = rows[:d.train_limit] if d.train_limit else rows
    else:
      pick = random_subset(len(fs.features), d.contrastive_limit, config.seed, 11)
      rows = fs.features if pick is None else fs.features[pick]
    parts.append((f"{dataset}/{class_name}" if class_name else dataset, weight, rows))
  return mixture_lib.concatenate(parts)


def write_test_index(workdir: str, test_sources: Sequence[str], source_id: np.ndarray, index: np.ndarray) -> dict:
  """Writes test_index.npz (rows aligned with scores.npz); returns the results entry naming the sources.

  test_sources: the metadata 'source_detail' of each test dataset (e.g.
  'zip:/data/cifar10-jpeg.zip:test'); source_id [T] indexes it; index [T] is the
  example's position in that source (the extractor's 'index' column).
  """
  path = os.path.join(workdir, TEST_INDEX_FILE)
  with atomic_write(path, "wb") as f:
    np.savez(f, source_id=np.asarray(source_id, np.int64), index=np.asarray(index, np.int64))
  return {"test_sources": list(test_sources)}
