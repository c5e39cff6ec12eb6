"""Shared pieces of the benchmarks: the reference workload's data, model and timing helpers."""
import json
import statistics
import time

import numpy as np


def on_sphere(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
  """[rows, dim] float64 points of unit norm."""
  x = rng.normal(size=(rows, dim))
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def sphere_batches(num: int, batch: int, dim: int, seed: int = 0, noise: float = 0.02):
  """`num` (inlier [batch, dim], contrastive [batch, dim]) float32 pairs on the unit sphere plus noise.

  Inliers cluster around one direction, contrastive vectors are spread over
  the sphere, as with one CIFAR class against ImageNet features.
  """
  rng = np.random.default_rng(seed)
  center = rng.normal(size=dim)
  out = []
  for _ in range(num):
    x_in = rng.normal(size=(batch, dim)) * 0.6 + center / np.linalg.norm(center) * 3
    x_con = rng.normal(size=(batch, dim))
    pair = []
    for x in (x_in, x_con):
      x = x / np.linalg.norm(x, axis=1, keepdims=True) + noise * rng.normal(size=x.shape)
      pair.append(x.astype(np.float32))
    out.append(tuple(pair))
  return out


def allinone_train_flops(dim: int, blocks: int, width: int, depth: int, batch: int) -> float:
  """Matmul FLOPs of one train step (forward + backward ~ 3x forward), per `batch` samples.

  Per block and sample: the conditioner d1 -> width (-> width)*(depth-1) -> 2*d2
  and the D x D mixing matmul; 2 FLOPs per multiply-add.
  """
  d1, d2 = dim - dim // 2, dim // 2
  macs = d1 * width + (depth - 1) * width * width + width * 2 * d2 + dim * dim
  return 3 * 2 * macs * blocks * batch


def median_rate(times, count):
  """Median of count / t over repeated timings."""
  return statistics.median(count / t for t in times)


def emit(record: dict) -> None:
  print(json.dumps(record), flush=True)


class Timer:
  def __enter__(self):
    self.start = time.perf_counter()
    return self

  def __exit__(self, *exc):
    self.seconds = time.perf_counter() - self.start
