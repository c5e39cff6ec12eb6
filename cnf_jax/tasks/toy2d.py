"""The paper's 2-D toy (section 5.1, Fig. 4): contrastive flow versus the likelihood ratio.

Inliers p = N([1, 1], I), contrastive q = N([0, 0], s^2 I) with s =
config.data.q_std (default 1, the paper's "normal distribution centred on the
origin"). With s <= 1 the analytic log-ratio log p/q grows without bound away
from both Gaussians, so a ratio detector calls far-away points inliers, while
the contrastive flow's density C (p - q)_+ vanishes there.

Test set (results "auroc"): held-out inliers against *far* outliers drawn
uniformly on the annulus of radii [far_min, far_max] around the midpoint
[0.5, 0.5], all directions. Extra set "contrastive": inliers against fresh
samples of q. The plot shows both learned in-distribution scores (log p_cf
and log p_flow - log p_contrastive) over the plane.
"""
import os

import numpy as np

from cnf_jax.reports import plotting
from cnf_jax.data.task_data import TaskData

P_MEAN = np.array([1.0, 1.0])
CENTER = np.array([0.5, 0.5])


def _far_outliers(rng, n, r_min, r_max):
  angle = rng.uniform(0.0, 2 * np.pi, n)
  radius = rng.uniform(r_min, r_max, n)
  return CENTER + radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)


def load_data(config) -> TaskData:
  d = config.data
  rng = np.random.default_rng(config.seed)
  draw_p = lambda n: P_MEAN + rng.normal(size=(n, 2))
  draw_q = lambda n: d.q_std * rng.normal(size=(n, 2))
  inliers, contrastive = draw_p(d.num_train), draw_q(d.num_contrastive)
  test_in = draw_p(d.num_test)
  far = _far_outliers(rng, d.num_test, d.far_min, d.far_max)
  near = draw_q(d.num_test)
  labels = np.repeat([False, True], d.num_test)
  return TaskData(inliers=inliers, contrastive=contrastive,
                  test=np.concatenate([test_in, far]), test_is_anomaly=labels,
                  extra_test_sets={"contrastive": (np.concatenate([test_in, near]), labels)})


def analyze(config, workdir, data, log_prob_fns, results) -> dict:
  lim, n = 6.0, 161
  axis = np.linspace(-lim, lim, n)
  xx, yy = np.meshgrid(axis, axis)
  grid = np.stack([xx.ravel(), yy.ravel()], axis=1)
  panels = {}
  if "cf" in log_prob_fns:
    panels["log p_cf(x)"] = log_prob_fns["cf"](grid)
  if "flow" in log_prob_fns and "contrastive_flow" in log_prob_fns:
    panels["log p_flow(x) - log p_con(x)"] = (
        log_prob_fns["flow"](grid) - log_prob_fns["contrastive_flow"](grid))
  # The same scores on the training inliers, to anchor each panel's colour range.
  inlier_scores = {}
  if "cf" in log_prob_fns:
    inlier_scores["log p_cf(x)"] = log_prob_fns["cf"](data.inliers)
  if "log p_flow(x) - log p_con(x)" in panels:
    inlier_scores["log p_flow(x) - log p_con(x)"] = (
        log_prob_fns["flow"](data.inliers) - log_prob_fns["contrastive_flow"](data.inliers))
  return {"plot": _plot(os.path.join(workdir, "toy2d.png"), data, xx, yy, panels, inlier_scores, results)}


def _plot(path, data, xx, yy, panels, inlier_scores, results) -> str:
  plt = plotting.pyplot()
  fig, axes = plt.subplots(1, 1 + len(panels), figsize=(4.2 * (1 + len(panels)), 4), squeeze=False)
  axes = axes[0]
  far = data.test[data.test_is_anomaly]
  axes[0].scatter(*data.contrastive[:1000].T, s=2, alpha=0.4, label="contrastive q")
  axes[0].scatter(*data.inliers[:1000].T, s=2, alpha=0.4, label="inliers p")
  axes[0].scatter(*far[:300].T, s=2, alpha=0.6, c="k", label="far outliers (test)")
  axes[0].set_title("training samples")
  axes[0].legend(fontsize=7, markerscale=4, loc="lower right")
  aurocs = results.get("auroc", {})
  for ax, (title, score) in zip(axes[1:], panels.items()):
    method = "cf" if "p_cf" in title else "flow_ratio"
    # Log-scores reach -1e5 far out, which would flatten any colour scale; the range starts
    # 10 nats below the median inlier score, so both the inlier region and whatever the
    # model ranks above it (the paper's point about the ratio) stay visible.
    floor = np.median(inlier_scores[title]) - 10.0
    im = ax.pcolormesh(xx, yy, np.maximum(score, floor).reshape(xx.shape), shading="auto", cmap="viridis")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(f"in-distribution score {title}\nAUROC far outliers {aurocs.get(method, float('nan')):.3f}",
                 fontsize=8)
  for ax in axes:
    ax.set_xlim(xx.min(), xx.max())
    ax.set_ylim(yy.min(), yy.max())
    ax.set_aspect("equal")
  fig.tight_layout()
  return plotting.save_figure(fig, path, dpi=100)
