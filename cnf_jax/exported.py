"""A fitted detector's scorer as one serialised `jax.export` program, runnable without cnf_jax.

  det.export("scorer.npz")                      # ContrastiveFlowDetector.export -> write()
  scorer = exported.load("scorer.npz")          # in cnf_jax: input checks, chunks, p-values
  scorer.decision_function(X)                   # [N] float64, det.decision_function(X) within float32 rounding

Anywhere with only numpy and jax (plus flatbuffers, which jax's deserialiser imports):

  f = np.load("scorer.npz")
  program = jax.export.deserialize(bytearray(f["program"].tobytes()))
  scores = np.asarray(program.call(X.astype(np.float32)))     # X [N, n_features_in] -> [N] float32
  cal = np.sort(f["calibration_scores"])                      # conformal p-values, small = anomalous:
  p = (1 + cal.size - np.searchsorted(cal, scores, side="left")) / (cal.size + 1)

The program is the whole decision_function: raw rows [N, n_features_in] float32 (any N:
the batch dimension is symbolic) -> drop the constant columns -> the fitted normalisation
-> each model's log p with its weights as constants -> the method's score (higher = more
anomalous; cf / flow: -log p(x), flow_ratio: log p_contrastive(x) - log p_flow(x)), all
in float32 with full-float32 matmuls on every platform (no TF32 on GPUs). It runs on the
platforms it was lowered for (meta["platforms"]; cpu, cuda and tpu by default) and checks nothing: rows with NaN, or
all-zero rows under normalize='sphere', give NaN scores there; a loaded
ExportedScorer's check_input refuses them.

The file is one .npz: `program` (the serialised bytes as uint8), `meta` (a JSON string:
format, method, n_features_in, kept_columns, normalize, threshold, contamination, eps,
jax_version, platforms, program_sha256, the score and p-value conventions), `calibration_scores` [n_cal]
and `decision_scores` [N_train] (float64, from det.decision_function). jax loads programs
exported by versions up to about six months older than itself (jax.export's compatibility
window): load with the jax version in meta or a newer one.
"""
import hashlib
import json
from typing import Callable, Dict, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cnf_jax.data import preprocessing
from cnf_jax.data.npz_file import read_npz
from cnf_jax.data.task_data import check_features
from cnf_jax.errors import UserInputError
from cnf_jax.evaluation import metrics
from cnf_jax.evaluation.conformal import conformal_pvalues
from cnf_jax.files import atomic_write

FORMAT = "cnf_jax.ExportedScorer/1"
# CPU, NVIDIA GPU and TPU by default: the recipe above calls the program on jax's default
# backend, and a CPU-only program fails there on a GPU machine ("exported for platforms
# ('cpu',) but it is used on ('cuda',)", seen on an H200).
PLATFORMS = ("cpu", "cuda", "tpu")
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")   # jax.export's lowering platforms
# Rows per call; inputs are zero-padded to it, so one compilation serves every N (as the detector's SCORE_CHUNK).
CHUNK = 1024
PVALUE = "(1 + #{calibration_scores >= score}) / (n_cal + 1)"


def write(path: str, score_fn: Callable[[jax.Array], jax.Array], info: Dict, arrays: Dict[str, np.ndarray],
          platforms: Sequence[str] = PLATFORMS) -> None:
  """Exports score_fn (x [N, info['n_features_in']] float32 -> [N] float32) for `platforms` and
  writes it with `info` (JSON-able, into meta) and `arrays` to the .npz `path`, atomically."""
  platforms = _check_platforms(platforms)
  dim = int(info["n_features_in"])
  n, = jax.export.symbolic_shape("n")
  # Full float32 matmuls wherever the program runs: the default would let GPUs use TF32.
  with jax.default_matmul_precision("float32"):
    program = jax.export.export(jax.jit(score_fn), platforms=platforms)(jax.ShapeDtypeStruct((n, dim), jnp.float32))
  serialized = program.serialize()
  meta = dict(info, format=FORMAT, jax_version=jax.__version__, platforms=list(platforms),
              input=f"float32 [N, {dim}]", output="float32 [N], higher = more anomalous", p_value=PVALUE,
              program_sha256=hashlib.sha256(serialized).hexdigest())
  with atomic_write(path, "wb") as f:   # a reader sees the old file or the complete new one
    np.savez(f, program=np.frombuffer(serialized, np.uint8), meta=np.array(json.dumps(meta)), **arrays)


def _check_platforms(platforms) -> tuple:
  if isinstance(platforms, str):
    platforms = (platforms,)
  platforms = tuple(platforms)
  if not platforms or any(p not in KNOWN_PLATFORMS for p in platforms):
    raise UserInputError(f"export(platforms={platforms!r}): give one or more of {', '.join(KNOWN_PLATFORMS)}")
  return platforms


class ExportedScorer:
  """An exported scorer read back by `load`: the program, its meta and calibration scores.

  Attributes: meta (dict), method, n_features_in_, threshold_, calibration_scores_ [n_cal],
  decision_scores_ [N_train], program (jax.export.Exported).
  """

  def __init__(self, path: str, program, meta: Dict, calibration_scores: np.ndarray,
               decision_scores: np.ndarray):
    self.path, self.program, self.meta = path, program, meta
    self.method, self.n_features_in_, self.threshold_ = meta["method"], int(meta["n_features_in"]), meta["threshold"]
    self.calibration_scores_, self.decision_scores_ = calibration_scores, decision_scores
    self._device = run_device(program.platforms)
    self._call = jax.jit(program.call)

  def decision_function(self, X, name: str = "X") -> np.ndarray:
    """Anomaly scores [N] (float64 of the program's float32) of X [N, n_features_in]; checks X first."""
    return self.scores(self.check_input(X, name))

  def pvalues(self, X, name: str = "X") -> np.ndarray:
    """Conformal p-values [N] of X [N, n_features_in] against the calibration scores (small = anomalous)."""
    return conformal_pvalues(self.checked_calibration_scores(), self.decision_function(X, name))

  def check_input(self, X, name: str = "X") -> np.ndarray:
    """X as float32 [N, n_features_in], or a one-line UserInputError for what the program cannot
    score: another feature count, non-finite values, all-zero rows under normalize='sphere'."""
    x = np.asarray(X)
    if x.ndim == 2 and x.shape[1] != self.n_features_in_:
      raise UserInputError(f"{name} has {x.shape[1]} features, but the exported scorer {self.path} expects "
                           f"{self.n_features_in_} (the fitted detector's n_features_in_)")
    x = check_features(name, x)
    preprocessing.check(x[:, self.meta["kept_columns"]], self.meta["normalize"], name)
    return x

  def scores(self, x: np.ndarray) -> np.ndarray:
    """The program's scores [N] (as float64) of rows x [N, n_features_in] that passed check_input."""
    with jax.default_device(self._device):
      return metrics.apply_in_chunks(self._call, x, CHUNK)

  def checked_calibration_scores(self) -> np.ndarray:
    """calibration_scores_ [n_cal], or a one-line UserInputError when there are none."""
    if self.calibration_scores_.size == 0:
      raise UserInputError(f"{self.path} has no calibration scores (the detector was fitted with "
                           "calibration_fraction=0); call det.calibrate(X_inliers), then export again")
    return self.calibration_scores_


def run_device(platforms: Sequence[str]) -> jax.Device:
  """Where a program lowered for `platforms` runs here: jax's default device when the program
  has its platform, else the first device of one of its platforms that this jax has (a file
  exported for the CPU alone is scored on the CPU of a GPU machine)."""
  default = jax.devices()[0]
  backend = {"gpu": "cuda"}.get(default.platform, default.platform)
  if backend in platforms or (default.platform == "gpu" and "rocm" in platforms):
    return default
  for platform in platforms:
    try:
      return jax.devices({"cuda": "gpu", "rocm": "gpu"}.get(platform, platform))[0]
    except RuntimeError:   # no such backend here
      continue
  raise UserInputError(f"the exported program runs on {', '.join(platforms)}, and this jax has none of them "
                       f"(default backend {default.platform}); export it again with platforms including "
                       f"{backend}")


def load(path: str) -> ExportedScorer:
  """Reads what `write` wrote; a damaged or foreign file is a one-line UserInputError."""
  arrays = read_npz(path)
  try:
    meta = json.loads(str(arrays["meta"]))
    fmt = meta.get("format")
  except (KeyError, json.JSONDecodeError, AttributeError):
    raise UserInputError(f"{path} is not an exported scorer (no readable 'meta' entry); "
                         "write one with ContrastiveFlowDetector.export(path)") from None
  if fmt != FORMAT:
    from cnf_jax.detector import FORMAT as DETECTOR_FORMAT   # only here: scoring needs no sklearn
    if fmt == DETECTOR_FORMAT:
      raise UserInputError(f"{path} is a saved detector (det.save), not an exported scorer; export it with "
                           "ContrastiveFlowDetector.load(path).export(new_path)")
    raise UserInputError(f"{path} has format {fmt!r}; this version reads {FORMAT!r}")
  missing = sorted(({"program", "calibration_scores", "decision_scores"} - set(arrays))
                   | ({"method", "n_features_in", "threshold", "kept_columns", "normalize", "program_sha256"}
                      - set(meta)))
  if missing:
    raise UserInputError(f"{path}: no {', '.join(missing)} entry; the file is corrupt: export the detector again")
  serialized = arrays["program"].tobytes()
  # Edited or damaged program bytes can still deserialise, with other weights: only the hash tells.
  if hashlib.sha256(serialized).hexdigest() != meta["program_sha256"]:
    raise UserInputError(f"{path}: the program does not match its recorded sha256; the file is corrupt: "
                         "export the detector again")
  try:
    program = jax.export.deserialize(bytearray(serialized))
    program.mlir_module()   # parses the StableHLO bytes, so a failure shows here and not at the first call
  except Exception as e:  # flatbuffers and MLIR raise many types
    first = (str(e).splitlines() or [""])[0][:200]
    raise UserInputError(f"{path}: the program does not deserialise with jax {jax.__version__} (exported with "
                         f"jax {meta.get('jax_version')}; jax reads programs up to about six months older than "
                         f"itself): {type(e).__name__}: {first}") from None
  shape = program.in_avals[0].shape if len(program.in_avals) == 1 else ()
  if len(shape) != 2 or shape[1] != meta.get("n_features_in"):
    raise UserInputError(f"{path}: the program takes {program.in_avals}, not rows of meta's "
                         f"{meta.get('n_features_in')} features; the file is corrupt: export the detector again")
  return ExportedScorer(path, program, meta, np.asarray(arrays["calibration_scores"], np.float64),
                        np.asarray(arrays["decision_scores"], np.float64))
