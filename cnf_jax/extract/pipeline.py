"""Images -> features -> sharded feature dataset, resumably.

Shards cover contiguous ranges of the source order and are computed batch by
batch from the start of each shard, so a restarted run recomputes exactly the
same batches for the shards it has not finished and produces identical files.
Decoding and resizing (PIL releases the GIL) run in a thread pool a few batches
ahead of the forward pass.
"""
import collections
import concurrent.futures
import json
import os
import shutil
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from cnf_jax import cpu_features
from cnf_jax.data import feature_dataset as fd
from cnf_jax.errors import UserInputError
from cnf_jax.extract import backbones as backbones_lib
from cnf_jax.extract import sources as sources_lib


def cpu_has_bf16() -> bool:
  """Whether this CPU computes bfloat16 natively (AMX or AVX512-BF16); otherwise bf16 is slower."""
  return bool({"amx_bf16", "avx512_bf16"} & cpu_features.cpu_flags())


def resolve_precision(precision: str, device: str) -> bool:
  """'auto' | 'bf16' | 'fp32' -> whether to autocast to bfloat16."""
  if precision not in ("auto", "bf16", "fp32"):
    raise UserInputError(f"--precision must be auto, bf16 or fp32, not {precision!r}")
  if precision == "auto":
    return device.startswith("cuda") or cpu_has_bf16()
  return precision == "bf16"


def full_float32(torch_module) -> None:
  """Makes float32 mean float32 on NVIDIA GPUs: PyTorch lets cuDNN convolutions run in TF32
  (a 10-bit mantissa) by default, which moved EfficientNet features by up to 0.01 against
  the CPU's on an H200; --precision=fp32 promises the float32 features."""
  torch_module.backends.cudnn.allow_tf32 = False
  torch_module.backends.cuda.matmul.allow_tf32 = False


def _decode_batch(source: sources_lib.Source, indices: range, resolution: int, bad_files: str,
                  bottleneck: Optional[sources_lib.Bottleneck] = None) -> Dict[str, Any]:
  """Loads and resizes the images of `indices` (through `bottleneck` first, if any);
  unreadable files are skipped or raise."""
  images, labels, coarse, attrs, index, skipped = [], [], [], [], [], []
  for i in indices:
    try:
      image, label, coarse_label, attributes = source.load(i)
    except sources_lib.BadImage as e:
      if bad_files == "error":
        raise UserInputError(f"{e}; remove it or pass --bad_files=skip") from None
      skipped.append(str(e).split(" is not a readable image")[0])
      continue
    images.append(sources_lib.to_rgb_array(image, resolution, bottleneck))
    labels.append(label)
    coarse.append(coarse_label)
    attrs.append(attributes)
    index.append(i)
  return {"images": np.stack(images) if images else np.zeros((0, resolution, resolution, 3), np.uint8),
          "labels": labels, "coarse": coarse, "attributes": attrs, "index": index, "skipped": skipped}


class Progress:
  """A one-line progress report on stderr: done/total, images/s of this run, ETA."""

  def __init__(self, total: int, done: int, enabled: bool = True, every_s: float = 2.0):
    self.total, self.done, self.start_done = total, done, done
    self.start = self.last = time.perf_counter()
    self.enabled, self.every_s = enabled, every_s

  def update(self, n: int, final: bool = False):
    self.done += n
    now = time.perf_counter()
    if not self.enabled or (now - self.last < self.every_s and not final):
      return
    self.last = now
    rate = (self.done - self.start_done) / max(now - self.start, 1e-9)
    eta = (self.total - self.done) / rate if rate > 0 else float("inf")
    sys.stderr.write(f"\r{self.done}/{self.total} images  {rate:.0f} img/s  ETA {eta:.0f} s   ")
    if final:
      sys.stderr.write("\n")
    sys.stderr.flush()


def extract(source: sources_lib.Source, backbone: backbones_lib.Backbone, out: str, *, split: str,
            source_name: str, batch_size: int = 64, limit: Optional[int] = None, bf16: bool = False,
            device: str = "cpu", examples_per_shard: int = 5000, bad_files: str = "skip",
            overwrite: bool = False, workers: int = 2, progress: bool = True,
            stop_after_shards: Optional[int] = None,
            bottleneck: Optional[sources_lib.Bottleneck] = None, flip_average: bool = False) -> Dict[str, Any]:
  """Extracts features of the first `limit` examples of `source` into the dataset dir `out`.

  bottleneck: a resolution (and JPEG quality) every image passes through before it is
  resized for the backbone (`sources.Bottleneck`). metadata.json records it, the images'
  native resolution (`source_pixels`) and the smaller of the two (`effective_pixels`),
  which the one-class task compares between inliers and contrastive data.

  flip_average: each feature is the mean of the backbone's features of the image and of its
  left-right mirror (`Backbone.forward`); metadata.json records it ("flip_average": true/false).

  Returns the run's figures: images (computed in this run), seconds, images_per_s,
  skipped_files, shards_written, shards_reused. `stop_after_shards` stops after
  writing that many shards (to test resumption).
  """
  if batch_size < 1:
    raise UserInputError(f"--batch_size must be positive, got {batch_size}")
  if bad_files not in ("skip", "error"):
    raise UserInputError(f"--bad_files must be skip or error, not {bad_files!r}")
  n = source.num_examples if limit is None else min(limit, source.num_examples)
  if n == 0:
    raise UserInputError(f"{source.describe} has no examples to extract")
  num_shards = fd.num_shards_for(n, examples_per_shard)
  plan = {"source": source.describe, "split": split, "backbone": backbone.name,
          "resolution": backbone.resolution, "dim": backbone.dim, "num_examples": n,
          "num_shards": num_shards, "batch_size": batch_size, "bf16": bf16,
          "bad_files": bad_files, "format_version": fd.FORMAT_VERSION,
          "bottleneck": bottleneck.describe() if bottleneck else None}
  if flip_average:
    # Only when on: plans of interrupted runs written before the flag existed stay equal to a
    # rerun without it (they resume), and shards with and without it never mix (the plans differ).
    plan["flip_average"] = True
  stage = fd.begin(out, plan, overwrite=overwrite)
  spec = fd.feature_spec(backbone.dim, source.class_names, coarse_class_names=source.coarse_class_names,
                         attribute_names=list(source.attribute_names) or None)
  if backbone.model is not None:
    backbone.model.to(device)
  bounds = fd.shard_bounds(n, num_shards)
  todo = [s for s in range(num_shards) if not fd.shard_done(stage, split, s, num_shards)]
  done_before = sum(stop - start for s, (start, stop) in enumerate(bounds) if s not in todo)
  bar = Progress(n, done_before, enabled=progress)
  batches = [(s, range(b, min(b + batch_size, bounds[s][1]))) for s in todo
             for b in range(bounds[s][0], bounds[s][1], batch_size)]
  try:
    computed, skipped_total, written = _run_batches(
        source, backbone, stage, spec, split, num_shards, bounds, batches, bar, bf16=bf16, device=device,
        bad_files=bad_files, workers=workers, stop_after_shards=stop_after_shards, bottleneck=bottleneck,
        flip_average=flip_average)
  except UserInputError:
    # Bad input found before any shard was finished: leave nothing behind. Otherwise keep the
    # finished shards, so that a rerun after fixing the input resumes.
    if not any(fd.shard_done(stage, split, s, num_shards) for s in range(num_shards)):
      shutil.rmtree(stage, ignore_errors=True)
    raise
  seconds = time.perf_counter() - bar.start
  bar.update(0, final=True)
  result = {"images": computed, "seconds": round(seconds, 3),
            "images_per_s": round(computed / seconds, 1) if seconds > 0 else 0.0,
            "skipped_files": skipped_total, "shards_written": written,
            "shards_reused": num_shards - len(todo), "out": out}
  if written + (num_shards - len(todo)) < num_shards:
    result["complete"] = False
    return result
  metadata = {"source": source_name, "source_detail": source.describe, "split": split,
              "backbone": backbone.name, "backbone_detail": backbone.description,
              "resolution": backbone.resolution, "dim": backbone.dim, "bf16": bf16,
              "class_names": source.class_names, "coarse_class_names": source.coarse_class_names,
              "attribute_names": list(source.attribute_names) or None, "transform": None,
              "ignored_files": source.ignored, "flip_average": flip_average, **pixel_record(source, bottleneck)}
  fd.finish(out, spec, split, num_shards, metadata, overwrite=overwrite)
  result["complete"] = True
  return result


def pixel_record(source: sources_lib.Source, bottleneck: Optional[sources_lib.Bottleneck]) -> Dict[str, Any]:
  """metadata.json's resolution record: {"bottleneck": {pixels, jpeg_quality} or None,
  "source_pixels": native shorter side (median of a sample) or None, "effective_pixels": the
  smaller of the two, the finest detail that reaches the backbone}."""
  native = sources_lib.native_pixels(source)
  limits = [p for p in (native, bottleneck.pixels if bottleneck else None) if p]
  return {"bottleneck": bottleneck.describe() if bottleneck else None, "source_pixels": native,
          "effective_pixels": min(limits) if limits else None}


def _run_batches(source, backbone, stage, spec, split, num_shards, bounds, batches, bar, *, bf16, device,
                 bad_files, workers, stop_after_shards, bottleneck=None, flip_average=False):
  """Decodes ahead in a thread pool, runs the backbone, writes each shard when its last batch is in."""
  computed, skipped_total, written = 0, 0, 0
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
    pending = collections.deque()
    next_batch = 0

    def fill():
      nonlocal next_batch
      while next_batch < len(batches) and len(pending) < 2 * max(1, workers):
        shard, idx = batches[next_batch]
        pending.append((shard, idx, pool.submit(_decode_batch, source, idx, backbone.resolution, bad_files,
                                                bottleneck)))
        next_batch += 1

    fill()
    parts: List[Dict[str, Any]] = []
    while pending:
      shard, idx, future = pending.popleft()
      fill()
      batch = future.result()
      if len(batch["index"]):
        images = torch.from_numpy(batch["images"]).to(device)
        batch["features"] = backbone.forward(images, bf16=bf16, flip_average=flip_average).cpu().numpy()
        if not np.all(np.isfinite(batch["features"])):
          raise RuntimeError(f"non-finite features for images {idx.start}..{idx.stop - 1}")
      parts.append(batch)
      bar.update(len(idx))
      computed += len(batch["index"])
      if idx.stop == bounds[shard][1]:  # Last batch of this shard.
        skipped = [f for p in parts for f in p["skipped"]]
        skipped_total += len(skipped)
        fd.write_shard(stage, spec, split, shard, num_shards, _columns(parts, source, backbone.dim),
                       extra={"skipped_files": skipped})
        parts, written = [], written + 1
        if stop_after_shards is not None and written >= stop_after_shards:
          for _, _, f in pending:
            f.cancel()
          break
  return computed, skipped_total, written


def _columns(parts: List[Dict[str, Any]], source: sources_lib.Source, dim: int) -> Dict[str, Any]:
  """The batches of one shard as the columns `feature_dataset.write_shard` takes."""
  parts = [p for p in parts if len(p["index"])]
  cols: Dict[str, Any] = {
      "feature": np.concatenate([p["features"] for p in parts]) if parts else np.zeros((0, dim), np.float32),
      "label": np.array([l for p in parts for l in p["labels"]], dtype=np.int64),
      "index": np.array([i for p in parts for i in p["index"]], dtype=np.int64),
  }
  if source.coarse_class_names is not None:
    cols["coarse_label"] = np.array([c for p in parts for c in p["coarse"]], dtype=np.int64)
  if source.attribute_names:
    cols["attributes"] = {a: np.array([d[a] for p in parts for d in p["attributes"]], dtype=np.int64)
                          for a in source.attribute_names}
  return cols


def result_line(result: Dict[str, Any]) -> str:
  return json.dumps(result, sort_keys=True)
