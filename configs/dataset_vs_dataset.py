"""CIFAR-10 against another dataset on precomputed features (paper 5.2.4, Table 4).

  python -m cnf_jax.main --config=configs/dataset_vs_dataset.py:svhn --workdir=/tmp/cnf/dvd_svhn
  python -m cnf_jax.main --config=configs/dataset_vs_dataset.py:cifar100,svhn,celeba --workdir=/tmp/cnf/dvd_all
  python -m cnf_jax.main --config=configs/dataset_vs_dataset.py:svhn,runlocal --workdir=/tmp/cnf/dvd_local
  python -m cnf_jax.main --config=configs/dataset_vs_dataset.py:cifar100,svhn,celeba,chosen,fast --workdir=/tmp/cnf/dvd

Arg: one or more of cifar100, svhn, celeba (the test-time anomaly datasets),
optionally ",runlocal" for a seconds-long smoke test on subsets, and ",paper" /
",fast" as in configs/oneclass.py. The models only
see CIFAR-10, so one run with all three evaluates Table 4's row for a seed in
one training, as the sweep does.

Inliers: all CIFAR-10 training features (all classes); contrastive: Tiny
ImageNet; test: CIFAR-10 test (normal) against each dataset's test features
(anomalies); results.json "auroc_extra" holds each dataset's AUROC. Everything
else is the set-up of configs/oneclass.py. Needs <features_root>/
{cifar100,svhn_cropped,celeb_a}-test-<backbone>: from the shared subsets,
`benchmarks/make_table_features.sh` (CelebA through 32 px), or from TFDS (not
downloadable here), e.g.

  python -m cnf_jax.extract --source=tfds:svhn_cropped --split=test --backbone=effnet_lite0 \\
      --resolution=128 --out=~/.cache/cnf_jax/features/svhn_cropped-test-effnet_lite0
  then python -m cnf_jax.extract.pca --fit=<tiny_imagenet-train-effnet_lite0> --dims=128 --apply=<it>

Paper (MoCo v2 features, Table 4): CF 84.4 / 90.3 / 99.8 (CIFAR-100 / SVHN /
CelebA), Flow 82.9 / 65.4 / 100.0, Flow-ratio 84.7 / 68.3 / 100. Measured on the
shared subsets: benchmarks/results/tables_3_4_12.
"""
import os

from cnf_jax.experiments import config_lib

# Config word -> feature dataset source name (the extractor's default --source_name for tfds:<name>).
DATASETS = {"cifar100": "cifar100", "svhn": "svhn_cropped", "celeba": "celeb_a"}


def get_config(arg=None):
  oneclass = config_lib.load_config_module(os.path.join(os.path.dirname(__file__), "oneclass.py"))
  arg = config_lib.parse_arg(arg, __file__, **oneclass.WORDS, positional=config_lib.Positional(
      "datasets", tuple(DATASETS), many=True,
      needs="the anomaly dataset(s), e.g. ':svhn' or ':cifar100,svhn,celeba'"))
  c = oneclass.shared_setup(arg)
  c.task = "dataset_vs_dataset"
  del c.data.inlier_class  # every CIFAR-10 class is in-distribution
  c.data.inlier_source = "cifar10"
  c.data.anomaly_sources = ",".join(DATASETS[name] for name in arg.datasets)
  return c


def sweep(add):
  """Table 4: three seeds (3 runs), each trained once on CIFAR-10 and evaluated against all three
  datasets (results.json "auroc_extra"), as the paper's table needs one model per seed.

    python -m cnf_jax.sweep --config=configs/dataset_vs_dataset.py --workdir=/tmp/cnf/dvd_table
    python -m cnf_jax.report --workdir=/tmp/cnf/dvd_table

  A missing dataset is an error naming it; `--config=...:svhn` runs one column alone.
  """
  for seed in range(3):
    add(arg=",".join(DATASETS), seed=seed)
