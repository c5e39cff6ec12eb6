"""PCA baseline's distances: scipy's cdist (what PyOD and this code used) against
`baselines.euclidean_distances` (BLAS), on the components of a fitted PyOD-style PCA.

  python benchmarks/pca_speed.py [--train 4500 --test 10000 --dim 1280]

Data like Table 1's raw features: points on the unit sphere in `dim` dimensions, z-scored with the
training rows' statistics as `pca` does. Prints one JSON line: each way's seconds to compute the
[test, dim] distances to all `dim` components (one timed round each), the ratio, and the largest
relative difference of the two PCA scores.
"""
import os
import sys
from typing import Sequence

import numpy as np
from absl import app, flags
from scipy.spatial import distance as spatial_distance
from sklearn import decomposition, preprocessing

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from cnf_jax.evaluation import baselines  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("train", 4500, "training rows N")
flags.DEFINE_integer("test", 10000, "scored rows T")
flags.DEFINE_integer("dim", 1280, "feature dimension D")
flags.DEFINE_integer("seed", 0, "data seed")


def main(argv: Sequence[str]) -> None:
  del argv
  rng = np.random.default_rng(FLAGS.seed)
  train, test = common.on_sphere(rng, FLAGS.train, FLAGS.dim), common.on_sphere(rng, FLAGS.test, FLAGS.dim)
  scaler = preprocessing.StandardScaler().fit(train)
  pca = decomposition.PCA(random_state=0).fit(scaler.transform(train))
  z, weights = scaler.transform(test), pca.explained_variance_ratio_
  scores, seconds = {}, {}
  for name, distances in (("cdist", spatial_distance.cdist), ("blas", baselines.euclidean_distances)):
    with common.Timer() as t:
      scores[name] = np.sum(distances(z, pca.components_) / weights, axis=1)
    seconds[name] = t.seconds
  common.emit({"benchmark": "pca_speed", "train": FLAGS.train, "test": FLAGS.test, "dim": FLAGS.dim,
               "components": int(pca.n_components_), "cdist_s": round(seconds["cdist"], 4),
               "blas_s": round(seconds["blas"], 4),
               "cdist_over_blas": round(seconds["cdist"] / max(seconds["blas"], 1e-9), 1),
               "max_rel_diff": float(np.max(np.abs(scores["blas"] - scores["cdist"]) / np.abs(scores["cdist"])))})


if __name__ == "__main__":
  app.run(main)
