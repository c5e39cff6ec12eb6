"""Contrastive data contaminated with inliers (paper 5.3.1, Fig. 6).

  python -m cnf_jax.main --config=configs/contamination.py:d=0.25 --workdir=/tmp/cnf/contamination_d0.25
  python -m cnf_jax.main --config=configs/contamination.py:d=0.25,runlocal --workdir=/tmp/cnf/contamination_local
  # the whole study (7 values of D x 3 seeds, one vmapped program per model), then plot + table:
  python -m cnf_jax.sweep --config=configs/contamination.py --workdir=/tmp/cnf/contamination
  python -m cnf_jax.report --study=contamination --workdir=/tmp/cnf/contamination

Arg: d=<D> in [0, 1], optionally a CIFAR-10 class (default horse) and runlocal.
Inliers: the training features of the class. Contrastive data: the mixture
q_new = D p + (1 - D) q of eq. 10, i.e. data.contrastive_mixture =
"tiny_imagenet:<1-D>,cifar10/<class>:<D>", drawn per batch; the inlier rows in
it are the training inliers themselves (as in the paper). D here is the
fraction of inlier data, as in eqs. 10-14 (the paper's text around Fig. 6 reads
its axis the other way round: "D = 0 ... in-distribution and contrastive
distribution coincide"); the theory says CF's learned density, and so its
AUROC, does not change for D < 1, while Flow-ratio's log q_new - log p tends to
a constant as D -> 1.

Evaluated (results.json): AUROC against deer (auroc_by_group.deer) and against
all other classes without deer (auroc_excluding.deer), CF and Flow-ratio; eps = 0
as in the paper. Everything else is configs/oneclass.py.
runlocal checks the plumbing only: its 40 steps of a small flow leave the
log-densities of the sphere features near -117, below eps = 0, so CF's clamped
contrastive term never acts and CF equals a plain flow there (measured on the
real features: CF AUROC identical for every D); the full runs lift inlier
log p to about +150 within a few hundred steps.
"""
import os

from cnf_jax.experiments import config_lib
from cnf_jax.tasks.oneclass import CIFAR10_CLASSES

_ONECLASS = config_lib.load_config_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "oneclass.py"))
D_VALUES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def mixture(inlier_class: str, d: float) -> str:
  """data.contrastive_mixture with a fraction d of inlier data."""
  return f"tiny_imagenet:{round(1.0 - d, 10):g},cifar10/{inlier_class}:{d:g}"


def get_config(arg=None):
  arg = config_lib.parse_arg(
      arg, __file__, d=config_lib.fraction(0.1, "the fraction of inlier data"), runlocal=False,
      positional=config_lib.Positional("inlier_class", CIFAR10_CLASSES, default="horse",
                                       needs="at most one CIFAR-10 class (default horse)"))
  # The paper's settings (eps = 0, PyOD's defaults), as the recorded study ran.
  c = _ONECLASS.get_config(config_lib.join_arg(arg.inlier_class, "paper", "runlocal" if arg.runlocal else ""))
  c.methods = "cf,flow_ratio"
  c.data.contrastive_mixture = mixture(arg.inlier_class, arg.d)
  return c


def sweep(add):
  """Fig. 6: D in D_VALUES x 3 seeds, inliers horse (21 runs, one program per model)."""
  for seed in range(3):
    for d in D_VALUES:
      add(arg=f"d={d:g}", seed=seed)
