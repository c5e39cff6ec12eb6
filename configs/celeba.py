"""CelebA split by the `Male` attribute, one side as inliers (paper 5.2.3, Table 3).

  python -m cnf_jax.main --config=configs/celeba.py:female --workdir=/tmp/cnf/celeba_female
  python -m cnf_jax.main --config=configs/celeba.py:male,runlocal --workdir=/tmp/cnf/male_local
  python -m cnf_jax.main --config=configs/celeba.py:female,chosen,fast --workdir=/tmp/cnf/celeba_female_cf

Arg: female or male (the inlier side), optionally ",runlocal" for a
seconds-long smoke test on subsets, and ",paper" / ",fast" as in configs/oneclass.py.
As in the paper, each side is once the
inlier class and the other side the test-time anomalies (Table 3 has both rows
and their average); the contrastive data stay ImageNet-like (Tiny ImageNet), so
they do not resemble the faces. Inliers: CelebA training images with
Male == 1 (male) or 0 (female); test: the CelebA test split.

Everything else is the CIFAR-10 set-up of configs/oneclass.py. Needs the
feature datasets <features_root>/celeb_a-{train,test}-<backbone>: from the shared
subset, `benchmarks/make_table_features.sh` (the images pass through 32 px like Tiny ImageNet;
its female/ and male/ folders stand for the attribute), or from TFDS (not downloadable here):

  python -m cnf_jax.extract --source=tfds:celeb_a --split=train --backbone=effnet_lite0 \\
      --resolution=128 --bottleneck=32 --out=~/.cache/cnf_jax/features/celeb_a-train-effnet_lite0
  (same for --split=test), then python -m cnf_jax.extract.pca --fit=<tiny_imagenet-train-effnet_lite0>
      --dims=128 --apply=<each of them>

Paper (MoCo v2 features, Table 3): CF female 83.8 ± 3.2, male 87.1 ± 2.6;
Flow 75.8 / 86.7, Flow-ratio 76.7 / 86.4. Measured on the shared 6,000-image subset:
benchmarks/results/tables_3_4_12.
"""
import os

from cnf_jax.experiments import config_lib

SIDES = ("female", "male")  # attribute Male = 0, 1


def get_config(arg=None):
  oneclass = config_lib.load_config_module(os.path.join(os.path.dirname(__file__), "oneclass.py"))
  arg = config_lib.parse_arg(arg, __file__, **oneclass.WORDS, positional=config_lib.Positional(
      "side", SIDES, needs="the inlier side, ':female' or ':male'"))
  c = oneclass.shared_setup(arg)
  c.data.inlier_source = "celeb_a"
  c.data.label_field = "attributes/Male"
  c.data.class_names = SIDES
  c.data.inlier_class = arg.side
  return c


def sweep(add):
  """Table 3: both sides x three seeds (6 runs).

    python -m cnf_jax.sweep --config=configs/celeba.py --workdir=/tmp/cnf/celeba_table
    python -m cnf_jax.report --workdir=/tmp/cnf/celeba_table
  """
  for seed in range(3):
    for side in SIDES:
      add(arg=side, seed=seed)
