"""Feature preprocessing (paper 5.2.1): project onto the unit sphere, add small noise in training.

MoCo's contrastive objective ignores feature norms, so features are L2-normalised;
a sphere has no density in R^D, so training adds Gaussian noise of std
`noise_std` to make one. Tabular data is standardised per column instead.

The deterministic part (`fit` + `apply`) runs once on the host; the noise is
drawn inside the compiled train step (`add_noise`).
"""
import json
import os
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from cnf_jax.errors import UserInputError
from cnf_jax.files import atomic_write

METHODS = ("sphere", "standardize", "none")


def fit(x_train: np.ndarray, method: str) -> Dict[str, np.ndarray]:
  """Statistics for `apply`, from the training inliers x_train [N, D]."""
  if method not in METHODS:
    raise UserInputError(f"preprocess.normalize must be one of {METHODS}, got {method!r}")
  if method == "standardize":
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    # A constant column carries no information; scale 1 keeps it finite.
    std = np.where(std > 0, std, 1.0)
    return {"mean": mean.astype(np.float32), "std": std.astype(np.float32)}
  return {}


def apply(x: np.ndarray, method: str, stats: Dict[str, np.ndarray], name: str = "features") -> np.ndarray:
  """Deterministic preprocessing of x [N, D] -> [N, D] float32."""
  x = np.asarray(x, dtype=np.float32)
  check(x, method, name)
  return transform(x, method, stats)


def check(x: np.ndarray, method: str, name: str = "features") -> None:
  """A one-line UserInputError for rows of x [N, D] that `method` cannot normalise: all-zero rows
  have no direction on the sphere."""
  if method not in METHODS:
    raise UserInputError(f"preprocess.normalize must be one of {METHODS}, got {method!r}")
  if method == "sphere":
    zero = np.flatnonzero(np.sqrt((x * x).sum(axis=-1)) == 0)
    if zero.size:
      raise UserInputError(f"{name}: {zero.size} rows are all-zero and cannot be projected onto the "
                           f"sphere (first at row {zero[0]}); drop them or use preprocess.normalize='none'")


def transform(x, method: str, stats: Dict[str, np.ndarray], xp=np):
  """The normalisation of x [N, D] -> [N, D] as plain array maths in `xp` (numpy, or jax.numpy
  inside a traced function: the exported scorer bakes these very formulas in); no checks."""
  if method == "sphere":
    # What np.linalg.norm(x, axis=-1) computes, written so that jax.numpy traces it too.
    return x / xp.sqrt((x * x).sum(axis=-1, keepdims=True))
  if method == "standardize":
    return (x - stats["mean"]) / stats["std"]
  if method == "none":
    return x
  raise UserInputError(f"preprocess.normalize must be one of {METHODS}, got {method!r}")


def add_noise(rng: jax.Array, x: jax.Array, std) -> jax.Array:
  """x + N(0, std^2) per entry; std a number (a no-op for 0) or a traced scalar."""
  if isinstance(std, (int, float)) and std == 0:
    return x
  return x + std * jax.random.normal(rng, x.shape, x.dtype)


def to_json_dict(method: str, stats: Dict[str, np.ndarray]) -> Dict[str, Any]:
  """{"method", "stats": {name: list of float32 values}} -- what `save` writes."""
  if method not in METHODS:
    raise UserInputError(f"preprocess.normalize must be one of {METHODS}, got {method!r}")
  return {"method": method, "stats": {k: np.asarray(v, np.float32).tolist() for k, v in stats.items()}}


def from_json_dict(d: Dict[str, Any], where: str = "preprocessing") -> Tuple[str, Dict[str, np.ndarray]]:
  """Inverse of `to_json_dict`: (method, stats) with float32 arrays; checks what `apply` needs."""
  method = d.get("method") if isinstance(d, dict) else None
  if method not in METHODS:
    raise UserInputError(f"{where}: preprocessing method {method!r} is not one of {METHODS}")
  stats = {k: np.asarray(v, np.float32) for k, v in d.get("stats", {}).items()}
  if method == "standardize" and not {"mean", "std"} <= set(stats):
    raise UserInputError(f"{where}: 'standardize' needs stats 'mean' and 'std', found {sorted(stats)}")
  return method, stats


def save(path: str, method: str, stats: Dict[str, np.ndarray]) -> None:
  """Writes the preprocessing of a run to `path` (JSON) atomically: temp file, then rename.

  float32 values round-trip exactly through JSON (Python floats are float64).
  """
  with atomic_write(path) as f:
    json.dump(to_json_dict(method, stats), f)
    f.write("\n")


def load(path: str) -> Tuple[str, Dict[str, np.ndarray]]:
  """Reads what `save` wrote: (method, stats)."""
  try:
    with open(path) as f:
      d = json.load(f)
  except FileNotFoundError:
    raise UserInputError(f"preprocessing file not found: {path}") from None
  except json.JSONDecodeError as e:
    raise UserInputError(f"{path} is not valid JSON ({e}); it may be truncated") from None
  return from_json_dict(d, path)
