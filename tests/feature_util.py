"""Small made-up feature datasets in the extractor's on-disk format (cnf_jax.data.feature_dataset)."""
import os

import numpy as np

from cnf_jax.data import feature_dataset as fd

BACKBONE = "toy"  # The tests set config.data.backbone to this.


def clusters(rng, labels, dim=8, spread=0.3, offset=0.0):
  """Features [N, dim]: one random unit-norm centre per label value (seeded by the value) plus noise."""
  centres = {int(v): np.random.default_rng([int(v), int(offset * 1000)]).normal(size=dim) for v in np.unique(labels)}
  return np.stack([centres[int(v)] for v in labels]) * 3 + spread * rng.normal(size=(len(labels), dim))


def write(root, source, split, features, labels, *, class_names, coarse_labels=None, coarse_class_names=None,
          attributes=None, source_detail=None, index=None, extra_metadata=None):
  """Writes <root>/<source>-<split>-toy with the metadata keys the extractor records (and
  `extra_metadata`, e.g. effective_pixels); returns its path."""
  path = fd.dataset_dir(str(root), source, split, BACKBONE)
  n = len(features)
  metadata = {"source": source, "source_detail": source_detail or f"tfds:{source}:{split}", "split": split,
              "backbone": BACKBONE, "class_names": list(class_names)}
  if coarse_class_names is not None:
    metadata["coarse_class_names"] = list(coarse_class_names)
  metadata.update(extra_metadata or {})
  fd.write(path, features, labels, np.arange(n) if index is None else index, metadata=metadata,
           coarse_labels=coarse_labels, attributes=attributes, split=split, num_shards=2 if n > 3 else 1)
  return path


def write_tiny_imagenet(root, dim=8, n=300, seed=5, extra_metadata=None):
  """The contrastive set: broad Gaussian features."""
  rng = np.random.default_rng(seed)
  return write(root, "tiny_imagenet", "train", 3 * rng.normal(size=(n, dim)), np.zeros(n, np.int64),
               class_names=["all"], extra_metadata=extra_metadata)


def configure(config, root):
  """Points a config at the made-up feature root.

  The made-up classes have a dozen vectors, fewer than LOF's 20 neighbours or MCD needs
  for their dimension, so those baselines (tested in test_baselines.py) are left out here.
  """
  config.data.features_root = str(root)
  config.data.backbone = BACKBONE
  keep = [m for m in config.methods.split(",") if m not in ("lof", "mcd", "abod", "kde", "pca")]
  config.methods = ",".join(keep)
  return config
