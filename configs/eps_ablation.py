"""The clamp eps of the contrastive loss: fixed values and the auto rule (paper 5.2.1, A.3).

  python -m cnf_jax.main --config=configs/eps_ablation.py:deer --config.objective.eps=100 --workdir=/tmp/cnf/eps_deer_100
  python -m cnf_jax.main --config=configs/eps_ablation.py:deer,runlocal --workdir=/tmp/cnf/eps_local
  # the whole study (2 classes x (7 fixed eps + auto) x 3 seeds), then plot + table:
  python -m cnf_jax.sweep --config=configs/eps_ablation.py --workdir=/tmp/cnf/eps_ablation
  python -m cnf_jax.report --study=eps --workdir=/tmp/cnf/eps_ablation

Arg: a CIFAR-10 class (as configs/oneclass.py; default deer), optionally runlocal. Method CF
only; the sweep sets objective.eps to each of EPS_VALUES, and one more run per
class and seed uses objective.eps_auto (10% quantile of held-out inliers' log p
under a maximum-likelihood flow + ln 10). Scale: with the default features
(128-d on the unit sphere, noise 0.02) inlier log-densities of a trained flow
are around +150 to +250 (eps_probe reached a mean of 166 after 500 steps), so
the grid runs from well below (-200) to about the inliers' own level (200), where
the clamp starts to push the inliers' density down too. The paper finds AUROC
constant under reasonable changes of eps and uses eps = 0.

The fixed-eps runs differ only in seed, data and objective.eps, so `cnf_jax.sweep`
trains all of them as one vmapped program (eps is a traced per-model argument);
the auto runs (which also train the eps probe) form a second group.
runlocal checks the plumbing only: after its 40 steps every log p is far below
all but the lowest eps values, so the clamp acts differently than in full runs.
"""
import os

from cnf_jax.experiments import config_lib
from cnf_jax.tasks.oneclass import CIFAR10_CLASSES

_ONECLASS = config_lib.load_config_module(os.path.join(os.path.dirname(os.path.abspath(__file__)), "oneclass.py"))
EPS_VALUES = (-200.0, -100.0, 0.0, 50.0, 100.0, 150.0, 200.0)
CLASSES = ("deer", "cat")


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, __file__, runlocal=False, positional=config_lib.Positional(
      "inlier_class", CIFAR10_CLASSES, default="deer", needs="at most one CIFAR-10 class (default deer)"))
  # The paper's settings (eps = 0 unless the sweep sets it; PyOD's defaults), as the recorded study ran.
  c = _ONECLASS.get_config(config_lib.join_arg(arg.inlier_class, "paper", "runlocal" if arg.runlocal else ""))
  c.methods = "cf"
  return c


def sweep(add):
  """CLASSES x (EPS_VALUES + auto) x 3 seeds = 48 runs in two programs per model."""
  for seed in range(3):
    for name in CLASSES:
      for eps in EPS_VALUES:
        add(arg=name, seed=seed, **{"objective.eps": eps})
      add(arg=name, seed=seed, **{"objective.eps_auto": True})
