"""The exact KDE (`baselines.kde_exact`) against the tree KDE a finished run scored with.

  python benchmarks/results/table1/kde_exact_check.py <run folder> ... > kde_exact_seed1.jsonl

Each run folder is a finished run with the `kde` method and the tree (kde_exact off): its
config.json gives the data, the seed and the bandwidth, its scores.npz the tree's test scores.
The run's training rows are loaded again (`experiment.prepare_run`, the same held-out split), the
exact KDE is fitted on them and scores the test set. One JSON line per run: both test AUROCs (%),
the largest difference of the scores in nats, and the seconds the exact KDE took for the test set
against the seconds the tree took for every set the run scored (results.json, about twice as many rows).
"""
import json
import sys
import tempfile
import time

import ml_collections
import numpy as np
from sklearn.metrics import roc_auc_score

from cnf_jax.evaluation import baselines
from cnf_jax.experiments import experiment


def check(run_dir: str) -> dict:
  with open(f"{run_dir}/config.json") as f:
    config = ml_collections.ConfigDict(json.load(f))
  with open(f"{run_dir}/results.json") as f:
    tree_seconds = json.load(f)["baseline_seconds"]["kde"]
  with tempfile.TemporaryDirectory() as unused:   # prepare_run writes nothing; it wants a path
    run = experiment.prepare_run(config, unused)
  saved = np.load(f"{run_dir}/scores.npz")
  cfg = baselines.default_config()
  cfg.update(dict(config.baselines))
  cfg.kde_exact = True
  start = time.perf_counter()
  exact = baselines.fit("kde", run.fit_data.inliers, None, cfg, config.seed)(run.data.test)
  seconds = time.perf_counter() - start
  tree, is_anomaly = saved["score_kde"], saved["is_anomaly"]
  return {"run": run_dir.rstrip("/").split("/")[-1], "auroc_tree": round(100 * roc_auc_score(is_anomaly, tree), 4),
          "auroc_exact": round(100 * roc_auc_score(is_anomaly, exact), 4),
          "max_abs_diff_nats": float(np.max(np.abs(exact - tree))), "exact_test_s": round(seconds, 2),
          "tree_all_sets_s": tree_seconds, "score_range": [float(exact.min()), float(exact.max())]}


if __name__ == "__main__":
  for path in sys.argv[1:]:
    print(json.dumps(check(path)), flush=True)
