"""KDE baseline: sklearn's tree (PyOD's numbers, the default) against `baselines.kde_exact`.

  python benchmarks/kde_speed.py [--train 4500 --test 1000 --dim 1280 --bandwidth 1.0]

Data like Table 1's raw features: points on the unit sphere in `dim` dimensions (a CIFAR-10
class holds 4,500 training rows after the 10% held out). Prints one JSON line: each method's
seconds to fit and score the test rows (one timed round each: the tree takes minutes in high
dimensions), the ratio, and the largest difference of the two -log densities.
"""
import os
import sys
from typing import Sequence

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from cnf_jax.evaluation import baselines  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("train", 4500, "training rows N")
flags.DEFINE_integer("test", 1000, "scored rows T")
flags.DEFINE_integer("dim", 1280, "feature dimension D")
flags.DEFINE_float("bandwidth", 1.0, "Gaussian kernel width (PyOD's default 1.0)")
flags.DEFINE_integer("seed", 0, "data seed")


def main(argv: Sequence[str]) -> None:
  del argv
  rng = np.random.default_rng(FLAGS.seed)
  train, test = common.on_sphere(rng, FLAGS.train, FLAGS.dim), common.on_sphere(rng, FLAGS.test, FLAGS.dim)
  scores, seconds = {}, {}
  for exact in (False, True):
    cfg = baselines.default_config()
    cfg.kde_bandwidth, cfg.kde_exact = FLAGS.bandwidth, exact
    with common.Timer() as t:
      scores[exact] = baselines.fit("kde", train, None, cfg)(test)
    seconds[exact] = t.seconds
  common.emit({"benchmark": "kde_speed", "train": FLAGS.train, "test": FLAGS.test, "dim": FLAGS.dim,
               "bandwidth": FLAGS.bandwidth, "tree_s": round(seconds[False], 4), "exact_s": round(seconds[True], 4),
               "tree_over_exact": round(seconds[False] / max(seconds[True], 1e-9), 1),
               "max_abs_diff_nats": float(np.max(np.abs(scores[True] - scores[False])))})


if __name__ == "__main__":
  app.run(main)
