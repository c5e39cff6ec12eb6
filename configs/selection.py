"""Label-free choice of every method's settings on one-class CIFAR-10 (issue 14, part 2).

  # one candidate: CF with eps = 100 on airplane (criterion in results.json["selection"])
  python -m cnf_jax.main --config=configs/selection.py:airplane --config.objective.eps=100 --workdir=/tmp/cnf/sel_a
  # the candidates of every method, then the choice the criterion makes and how it compares:
  python -m cnf_jax.sweep --config=configs/selection.py --workdir=/tmp/cnf/selection
  python -m cnf_jax.sweep --config=configs/selection.py --workdir=/tmp/cnf/selection --runs='*methods=knn*'  # part
  python -m cnf_jax.report --select --workdir=/tmp/cnf/selection

Arg: a CIFAR-10 class (default airplane), optionally runlocal. Every run holds out
train.validation_fraction = 0.1 of the inliers and of the Tiny ImageNet rows; nothing is
fitted on them. The criterion (cnf_jax/evaluation/selection.py) is each method's AUROC of
held-out Tiny ImageNet against held-out inliers: training data only, no test image, no label.

The sweep: per class and seed, one run per candidate setting of each method (a grid of its
own knob, everything else as configs/oneclass.py):
  cf          objective.eps in EPS, and eps_auto (the 10% quantile rule + ln 10)
  flow, flow_ratio   preprocess.noise_std in NOISE (both in each run)
  oe          objective.oe_margin in OE_MARGINS
  kde         baselines.kde_bandwidth in KDE_BANDWIDTHS (0: median inlier distance)
  knn / lof / abod   baselines.knn_k / lof_k / abod_k in their grids
  pca         baselines.pca_standardize x pca_weighted
  pca_recon   baselines.pca_variance in PCA_VARIANCE (how many components)
  mse, mse_ratio, mcd   no knob: one candidate each (one run)
`cnf_jax.report --select` takes, per class, seed and method, the candidate with the highest
criterion and reports its test AUROC, the best test AUROC among the candidates (the gap is
what choosing on test labels would have added) and Spearman's rho between the two.
"""
import os

from cnf_jax.experiments import config_lib
from cnf_jax.tasks.oneclass import CIFAR10_CLASSES

_ONECLASS = config_lib.load_config_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "oneclass.py"))
CLASSES = CIFAR10_CLASSES
SEEDS = (0,)
VALIDATION_FRACTION = 0.1
# Inlier log-densities of the trained flows on these features sit around +150 to +250 (see
# configs/eps_ablation.py): the grid spans from far below them to their own level.
EPS = (-100.0, 0.0, 100.0, 200.0)
NOISE = (0.01, 0.02, 0.05)
OE_MARGINS = (10.0, 128.0, 512.0)
# 0.025 and 0.05 were added when the criterion chose the smallest value, 0.1, on raw 1,280-d
# unit-sphere features (benchmarks/results/selection/raw_lite0.md); PCA-128 was searched without them.
KDE_BANDWIDTHS = (0.0, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
KNN_K = (1, 5, 10, 20, 50)
# LOF's 100 and ABOD's 50 were added when the criterion chose the largest value, 50 and 20, on every
# class of the raw 1,280-d features, and LOF's 200 and 500 when 100, then 200, won on 9 of 10
# (benchmarks/results/selection/raw_lite0.md); PCA-128 was searched without them.
LOF_K = (5, 20, 50, 100, 200, 500)
ABOD_K = (5, 10, 20, 50)
PCA_VARIANCE = (0.5, 0.8, 0.9, 0.95)


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, __file__, runlocal=False, positional=config_lib.Positional(
      "inlier_class", CIFAR10_CLASSES, default="airplane", needs="at most one CIFAR-10 class (default airplane)"))
  # Each method's knob around the paper's settings and PyOD's defaults: what the criterion chose from.
  c = _ONECLASS.get_config(config_lib.join_arg(arg.inlier_class, "paper", "runlocal" if arg.runlocal else ""))
  c.train.validation_fraction = VALIDATION_FRACTION   # configs/oneclass.py's too; the criterion needs it
  return c


def candidates():
  """[(methods, {dotted key: value})]: one entry per candidate run of a class and seed."""
  out = [("cf", {"objective.eps": eps}) for eps in EPS]
  out.append(("cf", {"objective.eps_auto": True}))
  out += [("flow,flow_ratio", {"preprocess.noise_std": n}) for n in NOISE]
  out += [("oe", {"objective.oe_margin": m}) for m in OE_MARGINS]
  out += [("kde", {"baselines.kde_bandwidth": b}) for b in KDE_BANDWIDTHS]
  out += [("knn", {"baselines.knn_k": k}) for k in KNN_K]
  out += [("lof", {"baselines.lof_k": k}) for k in LOF_K]
  out += [("abod", {"baselines.abod_k": k}) for k in ABOD_K]
  out += [("pca", {"baselines.pca_standardize": s, "baselines.pca_weighted": w})
          for s in (True, False) for w in (True, False)]
  out += [("pca_recon", {"baselines.pca_variance": v}) for v in PCA_VARIANCE]
  out.append(("mse,mse_ratio,mcd", {}))
  return out


def sweep(add):
  """CLASSES x SEEDS x candidates(): the cf runs of one eps grid share a vmapped program."""
  for seed in SEEDS:
    for name in CLASSES:
      for methods, settings in candidates():
        add(arg=name, seed=seed, methods=methods, **settings)
