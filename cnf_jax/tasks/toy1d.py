"""The paper's 1-D toy (section 5.1, Fig. 3): p = N(0, 1) inliers, q = N(1, 2^2) contrastive.

Here "N(1, 2)" is read as mean 1 and standard deviation 2 (a broader
contrastive density, as the method assumes). A contrastive flow trained on
samples of p and q should learn the normalised positive difference

  p_bar(x) = C (p(x) - q(x))_+ ,   C = 1 / integral (p - q)_+ ,

which is supported on about [-1.85, 1.18]. `analyze` reports the total
variation distance 0.5 * integral |p_cf - p_bar| ("tv_distance", by
quadrature on a grid) and plots both densities next to p and q.
The test set (for AUROC) is fresh samples of p (inliers) against q (anomalies).
"""
import os

import numpy as np
from scipy import stats

from cnf_jax.reports import plotting
from cnf_jax.data.task_data import TaskData


def load_data(config) -> TaskData:
  d = config.data
  rng = np.random.default_rng(config.seed)
  draw_p = lambda n: rng.normal(d.p_mean, d.p_std, size=(n, 1))
  draw_q = lambda n: rng.normal(d.q_mean, d.q_std, size=(n, 1))
  inliers, contrastive = draw_p(d.num_train), draw_q(d.num_contrastive)
  test = np.concatenate([draw_p(d.num_test), draw_q(d.num_test)])
  is_anomaly = np.repeat([False, True], d.num_test)
  return TaskData(inliers=inliers, contrastive=contrastive, test=test, test_is_anomaly=is_anomaly)


def positive_difference_density(x: np.ndarray, d) -> np.ndarray:
  """The analytic C (p - q)_+ on x [N] (normalised by quadrature on a fine grid)."""
  p = lambda t: stats.norm.pdf(t, d.p_mean, d.p_std)
  q = lambda t: stats.norm.pdf(t, d.q_mean, d.q_std)
  fine = np.linspace(d.p_mean - 12 * d.p_std, d.p_mean + 12 * d.p_std, 200_001)
  mass = np.trapezoid(np.maximum(p(fine) - q(fine), 0.0), fine)
  return np.maximum(p(x) - q(x), 0.0) / mass


def total_variation(density_a: np.ndarray, density_b: np.ndarray, grid: np.ndarray) -> float:
  """0.5 * integral |a - b| by the trapezoidal rule on `grid`."""
  return float(0.5 * np.trapezoid(np.abs(density_a - density_b), grid))


def analyze(config, workdir, data, log_prob_fns, results) -> dict:
  d = config.data
  grid = np.linspace(-8.0, 8.0, 4001)
  target = positive_difference_density(grid, d)
  out = {}
  learned = {name: np.exp(fn(grid[:, None])) for name, fn in log_prob_fns.items()}
  if "cf" in learned:
    out["tv_distance"] = total_variation(learned["cf"], target, grid)
    out["cf_mass_on_grid"] = float(np.trapezoid(learned["cf"], grid))
  if "flow" in learned:
    out["tv_distance_flow_to_p"] = total_variation(
        learned["flow"], stats.norm.pdf(grid, d.p_mean, d.p_std), grid)
  out["plot"] = _plot(os.path.join(workdir, "toy1d.png"), grid, d, target, learned, out)
  return out


def _plot(path, grid, d, target, learned, out) -> str:
  plt = plotting.pyplot()
  fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), sharex=True)
  left.plot(grid, stats.norm.pdf(grid, d.p_mean, d.p_std), label=f"p = N({d.p_mean}, {d.p_std}²) inliers")
  left.plot(grid, stats.norm.pdf(grid, d.q_mean, d.q_std), label=f"q = N({d.q_mean}, {d.q_std}²) contrastive")
  left.set_title("training distributions")
  right.plot(grid, target, "k--", lw=2, label="analytic C(p - q)+")
  if "cf" in learned:
    right.plot(grid, learned["cf"], label=f"contrastive flow (TV {out['tv_distance']:.3f})")
  if "flow" in learned:
    right.plot(grid, learned["flow"], alpha=0.6, label="standard flow")
  right.set_title("learned densities")
  for ax in (left, right):
    ax.set_xlim(-5, 6)
    ax.set_xlabel("x")
    ax.legend(fontsize=8)
  fig.tight_layout()
  return plotting.save_figure(fig, path, dpi=110)
