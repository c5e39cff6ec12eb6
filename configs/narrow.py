"""Narrow contrastive data and informed anomaly detection (paper 5.3.2-5.3.3, Fig. 7 and 8).

  python -m cnf_jax.main --config=configs/narrow.py:ratio=0 --workdir=/tmp/cnf/narrow_r0
  python -m cnf_jax.main --config=configs/narrow.py:ratio=0,runlocal --workdir=/tmp/cnf/narrow_local
  # the whole study (7 ratios x 3 seeds, one vmapped program per model), then plots + table:
  python -m cnf_jax.sweep --config=configs/narrow.py --workdir=/tmp/cnf/narrow
  python -m cnf_jax.report --study=narrow --workdir=/tmp/cnf/narrow

Arg: ratio=<r> in [0, 1], optionally runlocal. Inliers: CIFAR-10 deer.
Contrastive data: Tiny ImageNet mixed with the training features of CIFAR-10
horse, data.contrastive_mixture = "tiny_imagenet:<r>,cifar10/horse:<1-r>",
drawn per batch. The ratio follows the paper's convention: the fraction of the
broad (Tiny) ImageNet data, so ratio 0 = horse only ("a single narrow CIFAR10
class as contrastive dataset (mixture ratio equal to 0)"; the fully
supervised, informed case of Fig. 7 left) and ratio 1 = the usual set-up.

Evaluated (results.json): AUROC against horse only (auroc_by_group.horse; informed
AD, Fig. 7 left) and against the other classes without horse
(auroc_excluding.horse; Fig. 7 right), CF and Flow-ratio; eps = 0. scores.npz
holds the test scores with their classes and the scores of the contrastive data
(contrastive_score_<method>), for the Fig. 8 histograms at ratio 0.
Paper (MoCo features): from ratio 1 to 0, CF 96.7 -> 93 and Flow-ratio 96.5 -> 75.6
against the other classes.
runlocal checks the plumbing only: its 40 steps of a small flow leave the
log-densities of the sphere features near -117, below eps = 0, so CF's clamped
contrastive term never acts and CF equals a plain flow there (measured on the
real features: CF AUROC identical for every ratio); the full runs lift inlier
log p to about +150 within a few hundred steps.
"""
import os

from cnf_jax.experiments import config_lib

_ONECLASS = config_lib.load_config_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "oneclass.py"))
RATIOS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
INLIER, CONTRASTIVE_CLASS = "deer", "horse"


def mixture(ratio: float) -> str:
  """data.contrastive_mixture with a fraction `ratio` of Tiny ImageNet, the rest horse."""
  return f"tiny_imagenet:{ratio:g},cifar10/{CONTRASTIVE_CLASS}:{round(1.0 - ratio, 10):g}"


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, __file__, ratio=config_lib.fraction(0.0, "the fraction of Tiny ImageNet"),
                             runlocal=False)
  # The paper's settings (eps = 0, PyOD's defaults), as the recorded study ran.
  c = _ONECLASS.get_config(config_lib.join_arg(INLIER, "paper", "runlocal" if arg.runlocal else ""))
  c.methods = "cf,flow_ratio"
  c.data.contrastive_mixture = mixture(arg.ratio)
  return c


def sweep(add):
  """Fig. 7: ratios x 3 seeds (21 runs, one program per model); Fig. 8 uses ratio=0."""
  for seed in range(3):
    for ratio in RATIOS:
      add(arg=f"ratio={ratio:g}", seed=seed)
