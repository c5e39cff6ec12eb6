"""Your own feature vectors from one .npz file.

Arrays (float, [num, D]; names fixed):
  inliers          in-distribution training data
  contrastive      auxiliary contrastive data (optional; needed by cf and flow_ratio)
  test             evaluation data
  test_is_anomaly  [T] bool or 0/1, 1 = anomaly
"""
import os

from cnf_jax.data.npz_file import read_npz
from cnf_jax.data.task_data import TaskData
from cnf_jax.errors import UserInputError

REQUIRED = ("inliers", "test", "test_is_anomaly")


def load_data(config) -> TaskData:
  path = os.path.expanduser(config.data.path)
  if not path:
    raise UserInputError("configs/npz.py needs the file: --config.data.path=/path/to/features.npz")
  if not os.path.isfile(path):
    raise UserInputError(f"feature file not found: {path}")
  arrays = read_npz(path)
  missing = [k for k in REQUIRED if k not in arrays]
  if missing:
    raise UserInputError(f"{path} lacks the array(s) {', '.join(missing)}; it has {', '.join(arrays) or 'none'} "
                         f"(needed: {', '.join(REQUIRED)}, optional: contrastive)")
  return TaskData(inliers=arrays["inliers"], contrastive=arrays.get("contrastive"), test=arrays["test"],
                  test_is_anomaly=arrays["test_is_anomaly"])


def analyze(config, workdir, data, log_prob_fns, results) -> dict:
  return {}
