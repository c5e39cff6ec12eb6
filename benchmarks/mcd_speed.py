"""MCD baseline's fit: sklearn's MinCovDet against cnf_jax.evaluation.mcd.fit_min_cov_det, one thread.

  python benchmarks/mcd_speed.py [--train 4500 --test 2000 --dims 128,384]

Data like Table 1's features: points on the unit sphere in each of --dims dimensions. Prints one
JSON line per dimension: each fit's seconds (one timed fit each, in this order: sklearn, ours),
the ratio, whether the two supports are equal, and the largest relative difference of the
squared Mahalanobis distances of the --test new rows. Where the subsets' supports are singular
(their ~(N + D + 1) / (2 N / 300) rows <= D, D above ~190 at N = 4,500) the two searches may
end at different estimates: sklearn ranks those starts by rounding noise (cnf_jax/evaluation/mcd.py).
"""
import os
import sys
import warnings
from typing import Sequence

import numpy as np
from absl import app, flags
from sklearn import covariance as sk_covariance
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from cnf_jax.evaluation import mcd  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("train", 4500, "training rows N")
flags.DEFINE_integer("test", 2000, "scored rows T")
flags.DEFINE_list("dims", ["128", "384"], "feature dimensions D (sklearn takes ~60 s at 384 on one core)")
flags.DEFINE_integer("seed", 0, "data seed and random_state")


def main(argv: Sequence[str]) -> None:
  del argv
  for dim in map(int, FLAGS.dims):
    rng = np.random.default_rng(FLAGS.seed)
    train, test = common.on_sphere(rng, FLAGS.train, dim), common.on_sphere(rng, FLAGS.test, dim)
    with threadpool_limits(1), warnings.catch_warnings():
      warnings.simplefilter("ignore")   # sklearn's "Determinant has increased" on singular subsets
      with common.Timer() as t_sklearn:
        theirs = sk_covariance.MinCovDet(random_state=FLAGS.seed).fit(train)
      with common.Timer() as t_ours:
        ours = mcd.fit_min_cov_det(train, None, random_state=FLAGS.seed)
    want = theirs.mahalanobis(test)
    common.emit({"benchmark": "mcd_speed", "train": FLAGS.train, "test": FLAGS.test, "dim": dim,
                 "sklearn_s": round(t_sklearn.seconds, 2), "ours_s": round(t_ours.seconds, 2),
                 "sklearn_over_ours": round(t_sklearn.seconds / max(t_ours.seconds, 1e-9), 1),
                 "same_support": bool(np.array_equal(ours.support_, theirs.support_)),
                 "max_rel_diff": float(np.max(np.abs(ours.mahalanobis(test) - want) / want))})


if __name__ == "__main__":
  app.run(main)
