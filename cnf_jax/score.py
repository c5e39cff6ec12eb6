"""Scores new data with the flows of a finished run, or with an exported detector.

  python -m cnf_jax.score --workdir=<run> --input=<features.npz | table.csv | image folder | images.zip> \
      --out=scores.csv [--method=cf] [--alpha=0.05]
  python -m cnf_jax.score --detector=<exported.npz> --input=<features.npz | table.csv> --out=scores.csv [--alpha=0.05]

Writes one CSV row per input: id, score (higher = more anomalous), p_value,
is_anomaly (p_value <= alpha), atomically (a temp file renamed at the end: an
existing --out is either the old file or the complete new one). The last stdout
line is a JSON summary. Bad input prints one line "error: ..." and exits 2.

Inputs:
  .npz   a 2-D float array named `features` (or the only 2-D array in the file),
         optional `ids` [N] and `is_anomaly` [N] (bool or 0/1); an optional string
         `backbone` must match the run's.
  .csv   a header row; numeric columns in the training feature order; optional
         columns named `id` and `is_anomaly` (0/1).
  folder / .zip of images: features are computed with the run's backbone
         (config.data.backbone), which needs the extractor (`pip install -e ".[extract]"`).
Every input must have the run's feature dimension. With is_anomaly labels the summary
also holds auroc, aupr and fpr95 (FPR at 95% TPR) of the scores, and the false-alarm and
detection rates of is_anomaly at --alpha. Long inputs show a progress bar (--quiet: none).

The run's preprocessing is read from <workdir>/preprocessing.json; a run that
predates that file gets its statistics recomputed from the run's own training
data (the same deterministic `preprocessing.fit`), with a note on stderr.

p-values: calibration scores are the run's scores of the *test inliers*
(scores.npz, is_anomaly == 0). Those inliers were not used to train any model
nor to set eps, so the score function is independent of them, and for a new
input exchangeable with them (same source and distribution as the test inliers),
P(p <= alpha) <= alpha. This is not guaranteed if you chose the run among
several by their test AUROC (the test set then shaped the model choice), or if
your new data come from a shifted inlier distribution.

--detector (instead of --workdir) takes a file written by ContrastiveFlowDetector.export:
the scores come from its jax.export program (float32; cnf_jax.exported), the p-values from
its calibration scores (the detector's held-out calibration rows, or det.calibrate's).
It scores feature vectors (.npz of any backbone, .csv) of the detector's n_features_in;
it has no backbone, so images are refused.
"""
import csv
import io
import json
import os
import sys
import zipfile
from typing import List, Optional, Sequence, Tuple

from absl import flags
from absl import logging

from cnf_jax import cli
from cnf_jax.training import host_memory
from cnf_jax.data import csv_table
from cnf_jax.errors import UserInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
LABEL = "is_anomaly"   # the optional label array / column of an input (1 = anomaly)


# ---- the run ----------------------------------------------------------------------------------

def _read_json(path: str, what: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise UserInputError(f"{what} not found: {path}") from None
  except json.JSONDecodeError as e:
    raise UserInputError(f"{path} is not valid JSON ({e})") from None


def load_run(workdir: str, method: Optional[str]):
  """(config, method, dim, log_prob_fns {model: x -> log p}, (pre_method, stats), calibration scores [n])."""
  import ml_collections
  import numpy as np

  if not os.path.isdir(workdir):
    raise UserInputError(f"--workdir {workdir} is not a directory")
  config = ml_collections.ConfigDict(_read_json(os.path.join(workdir, "config.json"), "run config"))
  results = _read_json(os.path.join(workdir, "results.json"),
                       "results.json (the run has not finished; rerun cnf_jax.main on this workdir first)")
  from cnf_jax.experiments import config_lib
  from cnf_jax.training import plan
  methods = config_lib.method_list(config)
  flow_methods = [m for m in methods if m in plan.FLOW_METHODS]
  if method is None:
    if not flow_methods:
      raise UserInputError(f"this run evaluated only baselines ({', '.join(methods)}); cnf_jax.score scores "
                           f"with a trained flow method ({', '.join(plan.FLOW_METHODS)})")
    method = "cf" if "cf" in methods else flow_methods[0]
  if method not in flow_methods:
    raise UserInputError(f"--method={method!r}: this run trained {', '.join(flow_methods) or 'no flow'}; "
                         "baselines are scored only inside runs")
  dim = int(results["feature_dim"])
  log_prob_fns = {name: _restore(workdir, config, name, dim, int(config.train[plan.MODELS[name].steps_key]))
                  for name in plan.METHODS[method].models}

  scores_path = os.path.join(workdir, "scores.npz")
  from cnf_jax.data.npz_file import read_npz
  if not os.path.exists(scores_path):
    raise UserInputError(f"{scores_path} not found; rerun the run's cnf_jax.main command on this workdir to write it")
  try:
    scores = read_npz(scores_path)
  except UserInputError as e:
    raise UserInputError(f"{e}; rerun the run's cnf_jax.main command on this workdir to rewrite it") from None
  key = f"score_{method}"
  if key not in scores or "is_anomaly" not in scores or scores[key].shape != scores["is_anomaly"].shape:
    raise UserInputError(f"{scores_path}: no scores of method {method!r} with their is_anomaly labels; "
                         "rerun the run's cnf_jax.main command on this workdir to rewrite it")
  calibration = scores[key][~scores["is_anomaly"].astype(bool)]
  return config, method, dim, log_prob_fns, _preprocessing(workdir, config), calibration


def _restore(workdir: str, config, name: str, dim: int, final_step: int):
  """x [N, D] -> log p(x) [N] of model `name`, restored from its final checkpoint.

  Only the final step will do: the run's scores.npz (the p-value calibration) was made with
  it. A damaged final step is a one-line error; rerunning the run's cnf_jax.main command
  rebuilds it from the newest intact step (bit-identical), and nothing here writes.
  """
  import jax
  import numpy as np
  from cnf_jax.evaluation import metrics
  from cnf_jax.flows import flow_from_config, init_flow
  from cnf_jax.training.checkpoints import Checkpoints, check_finite, check_shapes, describe_error

  directory = os.path.join(workdir, "checkpoints", name)
  if not os.path.isdir(directory):
    raise UserInputError(f"model {name!r} has no checkpoints in {directory}")
  model = flow_from_config(config.flow, dim)
  ckpts = Checkpoints(directory, read_only=True)
  step = ckpts.latest_step()
  if step is None:
    raise UserInputError(f"model {name!r} has no complete checkpoint in {directory}")
  rerun = "rerun the run's cnf_jax.main command on this workdir: it rebuilds the final model from the newest intact step"
  if step != final_step:
    raise UserInputError(f"model {name!r}: the newest checkpoint in {directory} is step {step}, not the run's "
                         f"final step {final_step}; {rerun}")
  try:
    variables = ckpts.restore_variables(step)
  except Exception as e:  # orbax and tensorstore raise many types (even bare Exception) for damaged files
    raise UserInputError(f"model {name!r}: checkpoint {directory}/{step} does not restore "
                         f"({describe_error(e)}); {rerun}") from None
  finally:
    ckpts.close()
  # The saved shapes must be the run's architecture's (an edited config.json would otherwise fail
  # deep inside the flow, or silently score with a different model).
  wrong = check_shapes(variables, init_flow(model, jax.random.key(0)))
  if wrong:
    raise UserInputError(f"checkpoint {directory}/{step} does not fit the architecture in config.json "
                         f"(flow {config.flow.block} x{config.flow.num_blocks}, hidden {tuple(config.flow.hidden)}, "
                         f"{dim} features: {wrong})")
  damaged = check_finite(variables)
  if damaged:
    raise UserInputError(f"model {name!r}: checkpoint {directory}/{step} is damaged ({damaged}); {rerun}")
  log_prob = metrics.make_log_prob_fn(model, config.eval.batch_size)
  return lambda x: log_prob(variables, x)


def _preprocessing(workdir: str, config):
  from cnf_jax.data import preprocessing
  path = os.path.join(workdir, "preprocessing.json")
  if os.path.exists(path):
    return preprocessing.load(path)
  # Older runs: the statistics are a deterministic function of the run's training inliers.
  print(f"note: {path} not found; recomputing the preprocessing from the run's training data",
        file=sys.stderr)
  from cnf_jax import tasks
  from cnf_jax.data import task_data
  data = task_data.check_features("inlier training features", tasks.get(config.task).load_data(config).inliers)
  method = config.preprocess.normalize
  return method, preprocessing.fit(data, method)


# ---- inputs -----------------------------------------------------------------------------------

def read_npz(path: str, run_backbone: Optional[str],
             check_backbone: bool = True) -> Tuple[List[str], "np.ndarray", Optional["np.ndarray"]]:
  """(ids, features [N, D], is_anomaly [N] bool or None) of a .npz: `features` (or its only
  2-D numeric array), optional `ids` and optional `is_anomaly` labels (bool or 0/1); a
  `backbone` string must be run_backbone's when check_backbone."""
  from cnf_jax.data.npz_file import read_npz as read_arrays
  from cnf_jax.data.task_data import check_labels
  arrays = read_arrays(path)
  if check_backbone and "backbone" in arrays:
    backbone = str(arrays["backbone"])
    if backbone != (run_backbone or ""):
      raise UserInputError(f"{path} holds features of backbone {backbone!r} but the run was trained on "
                           f"{run_backbone or 'features without a backbone'!r}; extract with the run's backbone")
  if "features" in arrays:
    x = arrays["features"]
  else:
    matrices = [k for k, v in arrays.items() if v.ndim == 2 and v.dtype.kind in "biuf"]
    if len(matrices) != 1:
      raise UserInputError(f"{path}: name the array to score 'features' (found {', '.join(arrays) or 'no arrays'})")
    x = arrays[matrices[0]]
  ids = [str(i) for i in arrays["ids"]] if "ids" in arrays else [str(i) for i in range(len(x))]
  if len(ids) != len(x):
    raise UserInputError(f"{path}: {len(ids)} ids for {len(x)} feature rows")
  labels = check_labels(f"{path}: {LABEL}", arrays[LABEL]) if LABEL in arrays else None
  if labels is not None and len(labels) != len(x):
    raise UserInputError(f"{path}: {len(labels)} {LABEL} labels for {len(x)} feature rows")
  return ids, x, labels


def read_csv(path: str) -> Tuple[List[str], "np.ndarray", Optional["np.ndarray"]]:
  """(ids, features [N, D], is_anomaly [N] bool or None): an optional `id` column, an optional
  `is_anomaly` column (0/1), every other column a feature."""
  import numpy as np
  from cnf_jax.data.task_data import check_labels
  header, body = csv_table.read_rows(path)
  id_col = header.index("id") if "id" in header else None
  label_col = header.index(LABEL) if LABEL in header else None
  cols = [j for j in range(len(header)) if j not in (id_col, label_col)]
  x = np.empty((len(body), len(cols)), np.float64)
  ids = []
  for i, row in enumerate(body):
    if len(row) != len(header):
      raise UserInputError(f"{path}: line {i + 2} has {len(row)} cells, the header has {len(header)}")
    ids.append(row[id_col] if id_col is not None else str(i))
    for k, j in enumerate(cols):
      try:
        x[i, k] = float(row[j])
      except ValueError:
        raise UserInputError(f"{path}: line {i + 2}, column {header[j]!r}: {row[j]!r} is not a number") from None
  labels = None
  if label_col is not None:
    cells = [row[label_col].strip() for row in body]
    bad = [(i, c) for i, c in enumerate(cells) if c not in ("0", "1")]
    if bad:
      raise UserInputError(f"{path}: line {bad[0][0] + 2}, column {LABEL!r}: {bad[0][1]!r} is not 0 or 1 "
                           "(1 = anomaly)")
    labels = check_labels(f"{path}: {LABEL}", np.array([c == "1" for c in cells]))
  return ids, x, labels


def _image_names(path: str) -> Tuple[List[str], callable]:
  """Sorted image names in a folder (recursive) or zip, and read(name) -> bytes."""
  if os.path.isdir(path):
    names = sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)
    read = lambda n: open(os.path.join(path, n), "rb").read()
  else:
    try:
      archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
      raise UserInputError(f"{path} is not a readable zip archive") from None
    names = sorted(n for n in archive.namelist() if not n.endswith("/"))
    read = archive.read
  names = [n for n in names if not os.path.basename(n).startswith(".")]
  if not names:
    raise UserInputError(f"{path} holds no files to score")
  return names, read


def read_images(path: str, config, workdir: str, resolution: int = 0,
                checkpoint: Optional[str] = None) -> Tuple[List[str], "np.ndarray"]:
  """Features [N, D] of every image in a folder or zip, with the run's backbone."""
  import numpy as np
  backbone_name = config.data.get("backbone") if "data" in config else None
  if not backbone_name:
    raise UserInputError(f"the run in {workdir} was trained on feature vectors, not images (its config "
                         "records no data.backbone); pass features as .npz or .csv")
  try:
    import torch
    from PIL import Image
    from cnf_jax.extract import backbones, sources
  except ImportError as e:
    raise UserInputError(f"scoring images needs the extractor (pip install -e \".[extract]\"): {e}") from None
  # "<base>_pca<k>": the base backbone, then the PCA stored with the run's training features.
  base, _, pca = backbone_name.partition("_pca")
  resolution = resolution or _training_resolution(config)
  backbone = backbones.build(base, resolution=resolution or None, checkpoint=checkpoint)
  names, read = _image_names(path)
  from cnf_jax.training.progress import Progress
  bar = Progress(len(names), "features", unit="images")
  images = []
  for name in names:
    try:
      image = Image.open(io.BytesIO(read(name)))
      image.load()
    except Exception as e:  # PIL raises several types for non-images and truncated files.
      raise UserInputError(f"{path}: {name} is not a readable image ({type(e).__name__}); remove it") from None
    images.append(sources.to_rgb_array(image, backbone.resolution))
  feats = []
  for i in range(0, len(images), 64):
    feats.append(backbone.forward(torch.from_numpy(np.stack(images[i:i + 64]))).numpy())
    bar.update(i + len(feats[-1]))
  bar.close()
  feats = np.concatenate(feats)
  if pca:
    from cnf_jax.data import feature_dataset
    from cnf_jax.extract.pca import apply_pca
    train_dir = _training_features_dir(config)
    transform = feature_dataset.load_transform(train_dir) if train_dir else None
    if transform is None:
      raise UserInputError(f"backbone {backbone_name!r} needs the PCA of the run's training features "
                           f"({train_dir or 'config.data has no features_root'}/transform.npz), not found")
    feats = apply_pca(feats, transform)
  return names, feats, None


def _training_features_dir(config) -> Optional[str]:
  """<features_root>/<inlier_source>-train-<backbone>: the extractor output the run trained on, or None."""
  d = config.data
  if not all(k in d for k in ("features_root", "inlier_source", "backbone")):
    return None
  return os.path.join(os.path.expanduser(d.features_root), f"{d.inlier_source}-train-{d.backbone}")


def _training_resolution(config) -> int:
  """The resolution recorded with the run's training features (extractor metadata.json), or 0."""
  directory = _training_features_dir(config)
  meta = os.path.join(directory, "metadata.json") if directory else None
  if not meta or not os.path.exists(meta):
    return 0
  return int(_read_json(meta, "feature metadata").get("resolution", 0))


def read_input(path: str, config, workdir: str, resolution: int = 0, checkpoint: Optional[str] = None):
  """(ids, features or images' features [N, D], is_anomaly [N] or None) of --input.

  config None: the input of an exported scorer (`workdir` is its file), which records no
  backbone: feature vectors of any backbone, no images.
  """
  if not os.path.exists(path):
    raise UserInputError(f"--input {path} does not exist")
  lower = path.lower()
  if lower.endswith(".npz"):
    if config is None:
      return read_npz(path, None, check_backbone=False)
    return read_npz(path, config.data.get("backbone") if "data" in config else None)
  if lower.endswith(".csv"):
    return read_csv(path)
  if os.path.isdir(path) or lower.endswith(".zip"):
    if config is None:
      raise UserInputError(f"--input {path}: the exported scorer {workdir} scores feature vectors and has no "
                           "backbone for images; extract their features (python -m cnf_jax.extract) and pass the .npz")
    return read_images(path, config, workdir, resolution, checkpoint)
  raise UserInputError(f"--input {path}: expected a .npz, a .csv, an image folder or a .zip")


# ---- scoring ----------------------------------------------------------------------------------

def score(workdir: Optional[str], input_path: str, out: str, method: Optional[str] = None, alpha: float = 0.05,
          resolution: int = 0, checkpoint: Optional[str] = None, detector: Optional[str] = None) -> dict:
  """Scores `input_path` with the run in `workdir` or the exported scorer `detector` (one of the
  two); writes `out`; returns a summary dict."""
  from cnf_jax.evaluation.conformal import conformal_pvalues

  if (workdir is None) == (detector is None):
    raise UserInputError("give --workdir=<finished run> or --detector=<exported scorer .npz>, not both"
                         if workdir is not None else "--workdir (a finished run) or --detector (an exported "
                         "scorer .npz, ContrastiveFlowDetector.export) is required")
  if not 0 < alpha < 1:
    raise UserInputError(f"--alpha={alpha} must be in (0, 1)")
  out_dir = os.path.dirname(os.path.abspath(out))
  if os.path.isdir(out):
    raise UserInputError(f"--out {out} is a directory; give the path of the CSV file to write, e.g. {os.path.join(out, 'scores.csv')}")
  if not os.path.isdir(out_dir):
    raise UserInputError(f"--out {out}: directory {out_dir} does not exist")
  if detector is None:
    method, calibration, (ids, scores, labels) = _score_with_run(workdir, input_path, method, resolution, checkpoint)
  else:
    method, calibration, (ids, scores, labels) = _score_with_exported(detector, input_path, method)
  pvalues = conformal_pvalues(calibration, scores)
  flagged = pvalues <= alpha

  from cnf_jax.files import atomic_write   # a full disk: DiskFullError, no partial file
  with atomic_write(out, "w") as f:
    writer = csv.writer(f)
    writer.writerow(["id", "score", "p_value", "is_anomaly"])
    for row in zip(ids, scores, pvalues, flagged):
      writer.writerow([row[0], repr(float(row[1])), repr(float(row[2])), int(row[3])])
  summary = {"out": out, "rows": len(ids), "method": method, "alpha": alpha, "anomalies": int(flagged.sum()),
             "calibration_inliers": int(calibration.size)}
  if labels is not None:
    summary.update(label_metrics(scores, labels, flagged))
  return summary


def _score_with_run(workdir: str, input_path: str, method: Optional[str], resolution: int,
                    checkpoint: Optional[str]):
  """(method, calibration scores [n], (ids, scores [N], is_anomaly [N] or None)) of the run's flows."""
  import numpy as np
  from cnf_jax.data import preprocessing
  from cnf_jax.data.task_data import check_features
  from cnf_jax.training import plan

  config, method, dim, log_prob_fns, (pre_method, stats), calibration = load_run(workdir, method)
  ids, x, labels = read_input(input_path, config, workdir, resolution, checkpoint)
  x = np.asarray(x)
  if x.ndim == 2 and x.shape[1] != dim:
    raise UserInputError(f"{input_path}: {x.shape[1]} features per row, but the run was trained on {dim}; "
                         "use features from the run's extractor and backbone")
  x = check_features(f"{input_path}", x, dim)
  x = preprocessing.apply(x, pre_method, stats, input_path)
  # Blocks of whole eval batches: every batch the flows see has the shape the run's own scoring used.
  block = max(1, SCORE_BLOCK // config.eval.batch_size) * config.eval.batch_size
  scores = score_rows(method, lambda rows: plan.anomaly_scores(method, {n: fn(rows) for n, fn in log_prob_fns.items()}),
                      x, block)
  return method, calibration, (ids, scores, labels)


def _score_with_exported(path: str, input_path: str, method: Optional[str]):
  """(method, calibration scores [n], (ids, scores [N], is_anomaly [N] or None)) of an exported scorer."""
  from cnf_jax import exported
  scorer = exported.load(path)
  if method not in (None, scorer.method):
    raise UserInputError(f"--method={method!r}: the exported scorer {path} scores with method {scorer.method!r} only")
  calibration = scorer.checked_calibration_scores()
  ids, x, labels = read_input(input_path, None, path)
  x = scorer.check_input(x, input_path)
  return scorer.method, calibration, (ids, score_rows(scorer.method, scorer.scores, x), labels)


SCORE_BLOCK = 8192   # rows per progress update


def score_rows(method: str, score_fn, x: "np.ndarray", block: int = SCORE_BLOCK) -> "np.ndarray":
  """Anomaly scores [N] of `method` for rows x [N, D] by score_fn (rows [n, D] -> [n]), `block`
  rows at a time, with a progress bar."""
  import numpy as np
  from cnf_jax.training.progress import Progress
  bar = Progress(len(x), f"score {method}", unit="rows")
  parts = []
  for i in range(0, len(x), block):
    rows = x[i:i + block]
    parts.append(score_fn(rows))
    bar.update(i + len(rows))
  bar.close()
  return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def label_metrics(scores: "np.ndarray", is_anomaly: "np.ndarray", flagged: "np.ndarray") -> dict:
  """For scores, is_anomaly and flagged of the same rows [N], what labelled input adds to the summary: AUROC, AUPR, FPR at 95% TPR (None when the labels
  hold one class only) and the false-alarm / detection rates of is_anomaly at --alpha."""
  import numpy as np
  from cnf_jax.evaluation import metrics
  both = bool(is_anomaly.any() and (~is_anomaly).any())
  out = {name: (float(fn(scores, is_anomaly)) if both else None) for name, fn in metrics.METRICS.items()}
  out["labelled_anomalies"] = int(is_anomaly.sum())
  out["false_alarm_rate"] = float(flagged[~is_anomaly].mean()) if (~is_anomaly).any() else None
  out["detection_rate"] = float(flagged[is_anomaly].mean()) if is_anomaly.any() else None
  return out


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "A finished run's directory (with config.json, checkpoints, results.json).",
                      flag_values=fv)
  flags.DEFINE_string("detector", None, "Instead of --workdir: a scorer written by ContrastiveFlowDetector.export "
                      "(.npz); scores feature vectors with its program and calibration scores.", flag_values=fv)
  flags.DEFINE_string("input", None, "Data to score: .npz, .csv, an image folder or a .zip of images.",
                      flag_values=fv)
  flags.DEFINE_string("out", None, "Output CSV: id, score, p_value, is_anomaly.", flag_values=fv)
  flags.DEFINE_string("method", None, "Which of the run's methods scores (default: cf if the run has it; "
                      "an exported scorer has one).",
                      flag_values=fv)
  flags.DEFINE_float("alpha", 0.05, "is_anomaly = p_value <= alpha: at most this false-alarm rate on inliers.",
                     flag_values=fv)
  flags.DEFINE_integer("resolution", 0, "Images: backbone input resolution (default: the run's feature "
                       "dataset metadata, else the backbone's own).", flag_values=fv)
  flags.DEFINE_string("checkpoint", None, "Images with backbone moco_v2: the MoCo checkpoint the run's features "
                      "used.", flag_values=fv)
  flags.DEFINE_bool("quiet", False, "No progress bars (for scripts); errors and the JSON summary still print.",
                    flag_values=fv)


@cli.command
def main(argv: Sequence[str]) -> int:
  args, _ = cli.parse(define_flags, argv, __doc__, required=("input", "out"))
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO.
  if args.quiet:
    from cnf_jax.training import progress
    progress.set_quiet(True)
  from cnf_jax.training.checkpoints import quiet_orbax_after_failures
  quiet_orbax_after_failures()
  host_memory.configure()
  summary = score(args.workdir, args.input, args.out, args.method, args.alpha, args.resolution, args.checkpoint,
                  detector=args.detector)
  print(json.dumps(summary))
  return 0


if __name__ == "__main__":
  cli.run(main)
