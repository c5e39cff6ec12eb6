"""Contrastive flow on your own feature vectors, stored in one .npz file.

  python -m cnf_jax.main --config=configs/npz.py --config.data.path=/data/my_features.npz --workdir=/tmp/cnf/mine
  python -m cnf_jax.main --config=configs/npz.py:runlocal --config.data.path=... --workdir=...

The file holds `inliers` [N, D], `contrastive` [M, D], `test` [T, D] and
`test_is_anomaly` [T] (see cnf_jax/tasks/npz.py). Defaults are the image-feature
set-up (unit-sphere projection, noise 0.02, 8 AllInOne blocks, eps = 0);
for tabular data use --config.preprocess.normalize=standardize
--config.preprocess.noise_std=0 and consider --config.objective.eps_auto=True,
since eps = 0 is only meaningful for high-dimensional features.
"""
from cnf_jax.experiments import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, __file__, runlocal=False)
  c = config_lib.default_config()
  c.task = "npz"
  c.data.path = ""
  c.flow.permute_soft = True
  if arg.runlocal:
    config_lib.apply_runlocal(c)
  return c


def sweep(add):
  """Three seeds, and the fixed clamp eps against auto eps (the paper's recommendation):
  python -m cnf_jax.sweep --config=configs/npz.py --workdir=/tmp/cnf/npz_sweep --set=data.path=/data/my_features.npz"""
  for seed in range(3):
    for eps_auto in (False, True):
      add(seed=seed, **{"objective.eps_auto": eps_auto})
