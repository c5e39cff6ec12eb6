"""Tabular anomaly detection (paper 5.4, Fig. 9): rows of a CSV or .npz, one label column.

Input (`data.path`):
  .csv  a header row, then one row per sample, every cell a number. The column
        `data.label_column` (default "Class") holds the label: 0 = normal,
        1 = anomaly. Columns with an empty header name (an index column written
        by pandas, as in the credit-card file) and the columns named in
        `data.drop_columns` (comma-separated) are dropped; all others are features.
  .npz  an array "x" [N, D] of features and an array named `data.label_column` [N].
A relative path is looked up from the current directory, then from the
repository root (so the default ../shared/data/creditcard-sample.csv works from
anywhere inside the checkout).

Split: the normal rows are shuffled with `data.split_seed` (fixed across run
seeds, so seeds vary only training) and a fraction `data.test_fraction` of them
is held out; the test set is those normals plus every anomaly, which are never
trained on. Preprocessing (config) standardises each column with the mean and
std of the training normals.

Contrastive data: `data.contrastive = "permute"` (the only choice): each
training batch with every column permuted independently inside the train step
(cnf_jax/training/contrastive.py), i.e. samples of the product of the marginals.
"""
import os

import numpy as np

from cnf_jax.data import csv_table
from cnf_jax.data.task_data import TaskData
from cnf_jax.errors import UserInputError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Fewer training normals than this cannot fit (or standardise) a 2-block flow meaningfully.
MIN_TRAIN_ROWS = 10
CONTRASTIVE_CHOICES = ("permute",)


def resolve_path(path: str) -> str:
  path = os.path.expanduser(path)
  if not path:
    raise UserInputError("configs/tabular.py needs a file: --config.data.path=/path/to/table.csv (or .npz)")
  if os.path.isabs(path) or os.path.exists(path):
    return path
  in_repo = os.path.normpath(os.path.join(REPO_ROOT, path))
  return in_repo if os.path.exists(in_repo) else path


def read_csv(path: str, label_column: str, drop_columns=()):
  """(x [N, D] float64, labels [N] float64, feature names [D]) from a CSV with a header row."""
  header, data = csv_table.read_rows(path)
  if label_column not in header:
    raise UserInputError(f"{path}: no label column {label_column!r}; columns: {', '.join(h or '<unnamed>' for h in header)}. "
                         "Set --config.data.label_column to the column that holds 0 = normal, 1 = anomaly")
  unknown = [c for c in drop_columns if c not in header]
  if unknown:
    raise UserInputError(f"{path}: data.drop_columns names {', '.join(map(repr, unknown))}, not columns of the file "
                         f"(columns: {', '.join(h or '<unnamed>' for h in header)})")
  keep = [j for j, h in enumerate(header) if h and h != label_column and h not in drop_columns]
  if not keep:
    raise UserInputError(f"{path}: no feature columns left after dropping the label and {list(drop_columns)}")
  label_j = header.index(label_column)
  values = np.empty((len(data), len(header)), np.float64)
  for i, row in enumerate(data):
    if len(row) != len(header):
      raise UserInputError(f"{path}: line {i + 2} has {len(row)} fields, the header has {len(header)}")
    for j in keep + [label_j]:
      try:
        values[i, j] = float(row[j])
      except ValueError:
        raise UserInputError(f"{path}: non-numeric value {row[j]!r} in column {header[j]!r}, line {i + 2}; "
                             "every feature and label cell must be a number (drop text columns with "
                             "--config.data.drop_columns)") from None
  return values[:, keep], values[:, label_j], [header[j] for j in keep]


def read_npz(path: str, label_column: str):
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except (ValueError, OSError) as e:
    raise UserInputError(f"{path} is not a readable .npz file ({e})") from None
  missing = [k for k in ("x", label_column) if k not in arrays]
  if missing:
    raise UserInputError(f"{path} lacks the array(s) {', '.join(missing)} (has {', '.join(arrays) or 'none'}); "
                         f"it needs 'x' [N, D] and the labels {label_column!r} [N]")
  x = arrays["x"]
  if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
    raise UserInputError(f"{path}: 'x' must be a numeric [N, D] array, got {x.dtype} {x.shape}")
  labels = np.asarray(arrays[label_column]).reshape(-1)
  if not np.issubdtype(labels.dtype, np.number) and labels.dtype != bool:
    raise UserInputError(f"{path}: labels {label_column!r} must be numbers 0/1, got dtype {labels.dtype}")
  if len(labels) != len(x):
    raise UserInputError(f"{path}: {len(labels)} labels for {len(x)} rows of 'x'")
  return x.astype(np.float64), labels.astype(np.float64), [f"x{j}" for j in range(x.shape[1])]


def read_table(config):
  """(x [N, D], is_anomaly [N] bool, feature names) of config.data.path; checks the values."""
  d = config.data
  path = resolve_path(d.path)
  if not os.path.isfile(path):
    raise UserInputError(f"table not found: {path}; give --config.data.path=/path/to/table.csv (or .npz)")
  drop = tuple(c.strip() for c in d.drop_columns.split(",") if c.strip())
  if path.endswith(".npz"):
    x, labels, names = read_npz(path, d.label_column)
  else:
    x, labels, names = read_csv(path, d.label_column, drop)
  bad = sorted(set(np.unique(labels[np.isfinite(labels)]).tolist()) - {0.0, 1.0})
  if bad or not np.isfinite(labels).all():
    raise UserInputError(f"{path}: label column {d.label_column!r} must hold 0 (normal) or 1 (anomaly); "
                         f"found {bad[:5] if bad else 'NaN/inf'}")
  finite = np.isfinite(x)
  if not finite.all():
    i, j = np.argwhere(~finite)[0]
    raise UserInputError(f"{path}: {int((~finite).sum())} missing or infinite values (first in column "
                         f"{names[j]!r}, data row {i}); impute or drop them")
  return x, labels == 1, names, path


def split(x: np.ndarray, is_anomaly: np.ndarray, test_fraction: float, seed: int):
  """(train normals, test rows, test is_anomaly): a fraction of the normals plus all anomalies at test time."""
  normal = np.flatnonzero(~is_anomaly)
  order = np.random.default_rng([seed, 21]).permutation(normal)
  n_test = int(round(test_fraction * len(normal)))
  train, test_normal = np.sort(order[n_test:]), np.sort(order[:n_test])
  test = np.concatenate([test_normal, np.flatnonzero(is_anomaly)])
  return x[train], x[test], is_anomaly[test]


def load_data(config) -> TaskData:
  d = config.data
  if d.contrastive not in CONTRASTIVE_CHOICES:
    raise UserInputError(f"config data.contrastive={d.contrastive!r}: the tabular task supports "
                         f"{', '.join(CONTRASTIVE_CHOICES)} (columns permuted per batch)")
  if not 0 < d.test_fraction < 1:
    raise UserInputError(f"config data.test_fraction={d.test_fraction} must be in (0, 1)")
  x, is_anomaly, names, path = read_table(config)
  n_anomalies = int(is_anomaly.sum())
  train, test, test_is_anomaly = split(x, is_anomaly, d.test_fraction, d.split_seed)
  n_test_normal = int((~test_is_anomaly).sum())
  if len(train) < MIN_TRAIN_ROWS or n_anomalies == 0 or n_test_normal == 0:
    raise UserInputError(
        f"{path}: too few rows: {len(train)} training normals (need >= {MIN_TRAIN_ROWS}), {n_test_normal} test "
        f"normals and {n_anomalies} anomalies (need >= 1 each) with data.test_fraction={d.test_fraction}")
  constant = [names[j] for j in np.flatnonzero(train.std(axis=0) == 0)]
  if constant:
    raise UserInputError(f"{path}: column(s) {', '.join(constant[:10])} are constant over the training normals; "
                         "they carry no information and give the flow a degenerate density: drop them with "
                         f"--config.data.drop_columns={','.join(constant[:10])}")
  return TaskData(inliers=train, contrastive=None, test=test, test_is_anomaly=test_is_anomaly,
                  contrastive_permute=True)


def analyze(config, workdir, data, log_prob_fns, results) -> dict:
  return {"table": resolve_path(config.data.path), "test_fraction": config.data.test_fraction,
          "split_seed": config.data.split_seed}
