"""CIFAR-100 superclasses one-vs-rest on precomputed features (paper 5.2.3, Table 12).

  python -m cnf_jax.main --config=configs/cifar100.py:people --workdir=/tmp/cnf/cifar100_people
  python -m cnf_jax.main --config=configs/cifar100.py:people,runlocal --workdir=/tmp/cnf/people_local
  python -m cnf_jax.main --config=configs/cifar100.py:people,chosen,fast --workdir=/tmp/cnf/people_cf

Arg: one of the 20 superclasses (coarse labels: aquatic_mammals fish flowers
food_containers fruit_and_vegetables household_electrical_devices
household_furniture insects large_carnivores large_man-made_outdoor_things
large_natural_outdoor_scenes large_omnivores_and_herbivores medium_mammals
non-insect_invertebrates people reptiles small_mammals trees vehicles_1
vehicles_2), optionally ",runlocal" for a seconds-long smoke test on subsets, and
",paper" / ",fast" as in configs/oneclass.py.

Inliers: the CIFAR-100 training images of that superclass; anomalies: the test
images of the other 19 superclasses; auroc_by_group holds each of them alone.
Everything else (contrastive Tiny ImageNet features, backbone, flow, training)
is the CIFAR-10 set-up of configs/oneclass.py. Needs the feature datasets
<features_root>/cifar100-{train,test}-<backbone>: from the shared subset (250 train / 50 test
images per fine class), `benchmarks/make_table_features.sh`; or from TFDS (not
downloadable here):

  python -m cnf_jax.extract --source=tfds:cifar100 --split=train --backbone=effnet_lite0 \\
      --resolution=128 --out=~/.cache/cnf_jax/features/cifar100-train-effnet_lite0
  (same for --split=test), then python -m cnf_jax.extract.pca --fit=<tiny_imagenet-train-effnet_lite0>
      --dims=128 --apply=<each of them>

A missing dataset is an error naming its path and these commands.
Paper (MoCo v2 features, Table 12): CF is best or on par on most superclasses.
Measured on the shared subset: benchmarks/results/tables_3_4_12.
"""
import os

from cnf_jax.experiments import config_lib
from cnf_jax.tasks.oneclass import CIFAR100_SUPERCLASSES


def get_config(arg=None):
  oneclass = config_lib.load_config_module(os.path.join(os.path.dirname(__file__), "oneclass.py"))
  arg = config_lib.parse_arg(arg, __file__, **oneclass.WORDS, positional=config_lib.Positional(
      "inlier_class", CIFAR100_SUPERCLASSES, needs="exactly one CIFAR-100 superclass, e.g. ':people'"))
  # The CIFAR-10 set-up (features, flow, training, every method of Table 1, runlocal sizes) with
  # CIFAR-100's coarse labels.
  c = oneclass.shared_setup(arg)
  c.data.inlier_source = "cifar100"
  c.data.label_field = "coarse_label"
  c.data.class_names = CIFAR100_SUPERCLASSES  # names for datasets that store only '0'..'19'
  c.data.inlier_class = arg.inlier_class
  return c


def sweep(add):
  """Table 12: the 20 superclasses x three seeds (60 runs).

    python -m cnf_jax.sweep --config=configs/cifar100.py --workdir=/tmp/cnf/cifar100_table
    python -m cnf_jax.report --workdir=/tmp/cnf/cifar100_table
  """
  for seed in range(3):
    for name in CIFAR100_SUPERCLASSES:
      add(arg=name, seed=seed)
