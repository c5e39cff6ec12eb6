"""Label-free dimensionality reduction fitted on the auxiliary (contrastive) data.

  python -m cnf_jax.extract.pca --fit=<root>/tiny_imagenet-train-effnet_lite0 --dims=128 \\
      --apply=<root>/cifar10-train-effnet_lite0,<root>/cifar10-test-effnet_lite0

fits PCA on the --fit dataset (no labels used) and writes, for it and every --apply
dataset, a new dataset `<dir>_pca<dims>` (backbone name `<backbone>_pca<dims>`, so
`dataset_dir(root, source, split, 'effnet_lite0_pca128')` finds it) holding the
projected features and the transform itself (transform.npz: mean [D],
components [dims, D]), so every split goes through the same map.

Rerun with more --apply datasets, it keeps those that exist and maps the new ones with the PCA
already fitted (--overwrite refits and rewrites all).

numpy only: no torch needed.
"""
import os
import sys
from typing import Dict, Sequence

import numpy as np
from absl import flags

from cnf_jax import cli
from cnf_jax.data import feature_dataset as fd
from cnf_jax.errors import UserInputError


def fit_pca(features: np.ndarray, dims: int) -> Dict[str, np.ndarray]:
  """features [N, D] -> {'mean' [D], 'components' [dims, D] (orthonormal rows), 'explained_variance' [dims]}."""
  n, d = features.shape
  if not 0 < dims <= min(n, d):
    raise UserInputError(f"--dims must be in 1..{min(n, d)} (min of examples and feature dim), got {dims}")
  x = features.astype(np.float64)
  mean = x.mean(axis=0)
  _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
  var = s**2 / max(n - 1, 1)
  # Fix each component's sign (largest entry positive) so that refits give identical files.
  signs = np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(axis=1)])
  vt = vt * signs[:, None]
  return {"mean": mean.astype(np.float32), "components": vt[:dims].astype(np.float32),
          "explained_variance": var[:dims].astype(np.float32),
          "explained_variance_ratio": np.float32(var[:dims].sum() / var.sum())}


def apply_pca(features: np.ndarray, transform: Dict[str, np.ndarray]) -> np.ndarray:
  """features [N, D] -> [N, dims]."""
  if features.shape[1] != transform["mean"].shape[0]:
    raise UserInputError(f"features have dim {features.shape[1]} but the PCA was fitted on "
                         f"dim {transform['mean'].shape[0]}")
  return ((features - transform["mean"]) @ transform["components"].T).astype(np.float32)


def output_dir(src: str, dims: int) -> str:
  """Where the projection of the dataset at `src` onto `dims` components goes."""
  return src.rstrip("/") + f"_pca{dims}"


def transform_dataset(src: str, transform: Dict[str, np.ndarray], fitted_on: str, *, overwrite: bool = False) -> str:
  """Writes `<src>_pca<dims>` with projected features and the transform; returns its path."""
  dims = transform["components"].shape[0]
  fs = fd.load(src)
  out = output_dir(src, dims)
  meta = dict(fs.metadata)
  for key in ("shards", "num_shards", "num_examples", "format_version"):
    meta.pop(key, None)
  meta.update(backbone=f"{fs.metadata['backbone']}_pca{dims}", source_dim=fs.metadata["dim"],
              transform={"type": "pca", "dims": dims, "fitted_on": fitted_on, "file": fd.TRANSFORM_FILE,
                         "explained_variance_ratio": float(transform["explained_variance_ratio"])})
  fd.write(out, apply_pca(fs.features, transform), fs.labels, fs.index, metadata=meta,
           coarse_labels=fs.coarse_labels, attributes=fs.attributes or None,
           num_shards=fs.metadata["num_shards"], split=fs.metadata["split"], transform=transform,
           overwrite=overwrite)
  return out


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("fit", None, "feature dataset to fit on (the auxiliary data)", flag_values=fv)
  flags.DEFINE_list("apply", [], "comma-separated feature datasets to transform too", flag_values=fv)
  flags.DEFINE_integer("dims", 128, "dimensions kept", flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "rewrite transformed datasets that exist", flag_values=fv)


@cli.command
def main(argv: Sequence[str]) -> int:
  args, _ = cli.parse(define_flags, argv, __doc__, required=("fit",))
  fitted = output_dir(args.fit, args.dims)
  if os.path.exists(fitted) and not args.overwrite:
    # Fitted before: its transform maps the new --apply datasets, so that datasets added later
    # (another dataset's features, a new split) share the map of the ones made first.
    transform = fd.load_transform(fitted)
    print(f"{fitted} exists: its PCA is applied (--overwrite refits)", file=sys.stderr)
  else:
    transform = fit_pca(fd.load(args.fit).features, args.dims)
  for path in [args.fit] + [a for a in args.apply if a]:
    out = output_dir(path, args.dims)
    if os.path.exists(out) and not args.overwrite:
      print(f"{out} exists: kept (--overwrite rewrites it)", file=sys.stderr)
      print(out)
      continue
    print(transform_dataset(path, transform, os.path.basename(args.fit.rstrip("/")), overwrite=args.overwrite))
  return 0


if __name__ == "__main__":
  cli.run(main)
