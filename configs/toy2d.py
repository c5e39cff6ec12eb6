"""The paper's 2-D toy (section 5.1, Fig. 4): contrastive flow versus likelihood ratio.

  python -m cnf_jax.main --config=configs/toy2d.py --workdir=/tmp/cnf/toy2d
  python -m cnf_jax.main --config=configs/toy2d.py:runlocal --workdir=/tmp/cnf/toy2d_local

Inliers N([1, 1], I), contrastive N([0, 0], I) (data.q_std = 1), 10k each;
8 AllInOne blocks (random rotations, conditioner 64-64) per flow. Three flows
are trained: cf (contrastive, eps = -6), flow (inliers) and contrastive_flow
(contrastive data); flow_ratio scores with log p_contrastive - log p_flow.
In 2-D log p is about -2 to -4 on inliers, so eps = -6 lets the flow push the
q > p half-plane well below the inliers (the paper's eps = 0 is for 128-D).

Test: 2,000 held-out inliers against 2,000 *far* outliers on the annulus of
radii 4 to 6 around [0.5, 0.5] ("auroc"); "auroc_extra.contrastive" uses fresh
samples of q as the anomalies instead.

Expected (measured, 2 CPU cores, ~30 s, seed 0): auroc cf 0.999, flow 0.9999,
flow_ratio 0.552 on the far outliers (the ratio calls the part of the ring
beyond the inliers more "inlier" than the inliers). Against samples of q
(auroc_extra.contrastive): cf 0.801, flow 0.697, flow_ratio 0.840; there the
ratio is the Bayes-optimal test (its analytic AUROC is Phi(1) = 0.841).
Plot: <workdir>/toy2d.png.
"""
from cnf_jax.experiments import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, __file__, runlocal=False)
  c = config_lib.default_config()
  c.task = "toy2d"
  c.methods = "cf,flow_ratio,flow"
  c.data.num_train = 10000
  c.data.num_contrastive = 10000
  c.data.num_test = 2000
  c.data.q_std = 1.0
  c.data.far_min = 4.0
  c.data.far_max = 6.0

  c.preprocess.normalize = "none"
  c.preprocess.noise_std = 0.0

  c.flow.block = "allinone"
  c.flow.num_blocks = 8
  c.flow.hidden = (64, 64)
  c.flow.permute_soft = True   # in 2-D a hard permutation is often the identity.

  c.objective.eps = -6.0

  c.train.steps = 2000
  c.train.batch_size = 256
  c.train.contrastive_batch_size = 256
  c.train.lr = 2e-3
  c.train.warmup_steps = 100
  c.train.log_every = 250
  c.train.checkpoint_every = 1000
  if arg.runlocal:
    config_lib.apply_runlocal(c)
    c.data.num_train = c.data.num_contrastive = 2000
    c.data.num_test = 500
  return c


def sweep(add):
  """Three seeds of the toy: python -m cnf_jax.sweep --config=configs/toy2d.py --workdir=/tmp/cnf/toy2d_seeds"""
  for seed in range(3):
    add(seed=seed)
