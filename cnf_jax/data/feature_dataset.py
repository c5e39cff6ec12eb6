"""Feature datasets on disk: sharded TFRecords of tf.train.Example, read without TensorFlow.

One directory per (source, split, backbone), see `dataset_dir`:

  <root>/<source>-<split>-<backbone>/
    features-<split>.tfrecord-00000-of-0000S   tf.train.Example per image:
                                               feature float32[D], label int64,
                                               coarse_label int64 (if any),
                                               attributes/<name> int64 (if any),
                                               index int64 (position in the source)
    dataset_info.json, features.json           TFDS metadata: the directory loads with
                                               `tfds.builder_from_directory(dir)` where
                                               TensorFlow is installed
    metadata.json                              backbone, resolution, dim, counts,
                                               class_names, transform and per-shard
                                               counts and sha256 checksums
    transform.npz                              optional: a fitted PCA (see cnf_jax.extract.pca)

Writing goes into `<dir>.incomplete/`: each shard is written to a temp file and
renamed when complete, and the directory is renamed to `<dir>` only once every
shard and the metadata are there. An interrupted writer restarted with the same
plan skips the finished shards; readers never see half a dataset.

This module imports neither torch nor TensorFlow: examples are (de)serialised by
TFDS's numpy feature connectors and framed by `cnf_jax.data.tfrecord`.
"""
import collections
import dataclasses
import hashlib
import json
import math
import os
import shutil
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow_datasets as tfds

from cnf_jax.data import tfrecord
from cnf_jax.errors import UserInputError
from cnf_jax.files import atomic_write

DATASET_NAME = "features"  # The TFDS dataset name inside every directory.
METADATA_FILE = "metadata.json"
TRANSFORM_FILE = "transform.npz"
FORMAT_VERSION = 1
_INCOMPLETE = ".incomplete"
_PLAN_FILE = "_plan.json"


def dataset_dir(root: str, source: str, split: str, backbone: str) -> str:
  """The directory of one feature dataset, e.g. <root>/cifar10-train-effnet_lite0."""
  return os.path.join(root, f"{source}-{split}-{backbone}")


@dataclasses.dataclass
class FeatureSet:
  """A feature dataset in memory.

  features: float32 [N, D]; labels: int64 [N] (fine label); index: int64 [N]
  (position of the image in its source); coarse_labels: int64 [N] or None;
  attributes: name -> int64 [N]; metadata: the dict of metadata.json
  (always has 'class_names', 'backbone', 'dim', 'num_examples').
  """
  features: np.ndarray
  labels: np.ndarray
  index: np.ndarray
  coarse_labels: Optional[np.ndarray] = None
  attributes: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  metadata: Dict[str, Any] = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return self.features.shape[0]


# ---------------------------------------------------------------------------
# Example schema


def feature_spec(dim: int, class_names: List[str], *, coarse_class_names: Optional[List[str]] = None,
                 attribute_names: Optional[List[str]] = None) -> tfds.features.FeaturesDict:
  """The TFDS FeaturesDict of one example; written to features.json."""
  spec = {
      "feature": tfds.features.Tensor(shape=(dim,), dtype=np.float32),
      "label": tfds.features.ClassLabel(names=list(class_names)),
      "index": tfds.features.Scalar(dtype=np.int64),
  }
  if coarse_class_names is not None:
    spec["coarse_label"] = tfds.features.ClassLabel(names=list(coarse_class_names))
  if attribute_names:
    spec["attributes"] = tfds.features.FeaturesDict(
        {name: tfds.features.Scalar(dtype=np.int64) for name in attribute_names})
  return tfds.features.FeaturesDict(spec)


def _spec_from_metadata(metadata: Dict[str, Any]) -> tfds.features.FeaturesDict:
  return feature_spec(metadata["dim"], metadata["class_names"],
                      coarse_class_names=metadata.get("coarse_class_names"),
                      attribute_names=metadata.get("attribute_names"))


def shard_filename(split: str, shard: int, num_shards: int) -> str:
  """TFDS's default file template, so builder_from_directory finds the shards."""
  return f"{DATASET_NAME}-{split}.tfrecord-{shard:05d}-of-{num_shards:05d}"


def num_shards_for(num_examples: int, examples_per_shard: int = 5000) -> int:
  """Shards of at most `examples_per_shard` examples (at least one shard)."""
  return max(1, math.ceil(num_examples / examples_per_shard))


def shard_bounds(num_examples: int, num_shards: int) -> List[tuple]:
  """[(start, stop)] of each shard: contiguous, sizes differ by at most one."""
  edges = [round(i * num_examples / num_shards) for i in range(num_shards + 1)]
  return list(zip(edges[:-1], edges[1:]))


# ---------------------------------------------------------------------------
# Writing


def _atomic_write_bytes(path: str, data: bytes) -> None:
  with atomic_write(path, "wb", fsync=True) as f:
    f.write(data)


def staging_dir(path: str) -> str:
  """Where an unfinished dataset is built; renamed to `path` when complete."""
  return path.rstrip("/") + _INCOMPLETE


def begin(path: str, plan: Dict[str, Any], *, overwrite: bool = False) -> str:
  """Prepares the staging directory for writing `path` and returns it.

  `plan` (JSON-able: e.g. source, split, backbone, resolution, num_examples,
  num_shards) must equal the plan of an existing staging directory, so that a
  resumed run cannot mix shards of two different runs. An existing `path` is
  only replaced by `finish`, so a failed rebuild leaves the old dataset intact.
  """
  if os.path.exists(path) and not overwrite:
    raise UserInputError(f"{path} already exists; delete it or pass overwrite to rebuild it")
  stage = staging_dir(path)
  plan_path = os.path.join(stage, _PLAN_FILE)
  if os.path.isdir(stage):
    old = None
    if os.path.exists(plan_path):
      with open(plan_path) as f:
        old = json.load(f)
    if old == plan and not overwrite:
      return stage
    if old is not None and not overwrite:
      changed = sorted(k for k in set(old) | set(plan) if old.get(k) != plan.get(k))
      raise UserInputError(
          f"{stage} holds an interrupted run with different settings ({', '.join(changed)}); "
          "delete it, or rerun with the same settings to resume")
    shutil.rmtree(stage)
  os.makedirs(stage)
  _atomic_write_bytes(plan_path, json.dumps(plan, sort_keys=True, indent=1).encode())
  return stage


def shard_done(stage: str, split: str, shard: int, num_shards: int) -> bool:
  """Whether a shard was completely written by an earlier (maybe interrupted) run."""
  name = shard_filename(split, shard, num_shards)
  return os.path.exists(os.path.join(stage, name)) and os.path.exists(os.path.join(stage, name + ".json"))


def write_shard(stage: str, spec: tfds.features.FeaturesDict, split: str, shard: int, num_shards: int,
                examples: Dict[str, Any], *, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
  """Writes one shard atomically; `examples` maps feature name -> array [n, ...].

  Returns {'file', 'num_examples', 'num_bytes', 'sha256', **extra}, also kept
  beside the shard so that a resumed run can collect it into metadata.json.
  """
  n = len(examples["feature"])
  _check_columns(spec, examples)
  # Flat keys as TFDS names them: nested dicts become "attributes/<name>".
  flat = {}
  for key, col in examples.items():
    if isinstance(col, dict):
      flat.update({f"{key}/{a}": np.asarray(v, np.int64) for a, v in col.items()})
    else:
      flat[key] = np.asarray(col, np.float32 if key == "feature" else np.int64)
  records = [tfrecord.encode_example({k: (v[i] if k == "feature" else int(v[i])) for k, v in flat.items()})
             for i in range(n)]
  blob = tfrecord.encode_records(records)
  name = shard_filename(split, shard, num_shards)
  info = {"file": name, "num_examples": n, "num_bytes": len(blob),
          "sha256": hashlib.sha256(blob).hexdigest(), **(extra or {})}
  # The sidecar goes first: a shard file without its sidecar counts as not done.
  _atomic_write_bytes(os.path.join(stage, name + ".json"), json.dumps(info).encode())
  _atomic_write_bytes(os.path.join(stage, name), blob)
  return info


def _check_columns(spec: tfds.features.FeaturesDict, examples: Dict[str, Any]) -> None:
  """The columns must be exactly the spec's features, with labels inside the class range."""
  if set(examples) != set(spec.keys()):
    raise ValueError(f"columns {sorted(examples)} do not match the features {sorted(spec.keys())}")
  dim = spec["feature"].shape[0]
  if np.shape(examples["feature"])[1:] != (dim,):
    raise UserInputError(f"features have shape {np.shape(examples['feature'])}, expected [N, {dim}]")
  for key in ("label", "coarse_label"):
    if key in examples and len(examples[key]):
      num = spec[key].num_classes
      bad = [int(v) for v in examples[key] if not 0 <= int(v) < num]
      if bad:
        raise UserInputError(f"{key} {bad[0]} is outside 0..{num - 1} (the number of class names)")


def finish(path: str, spec: tfds.features.FeaturesDict, split: str, num_shards: int,
           metadata: Dict[str, Any], *, overwrite: bool = False) -> None:
  """Writes TFDS and cnf_jax metadata into the staging dir and renames it to `path`."""
  stage = staging_dir(path)
  shards = []
  for shard in range(num_shards):
    name = shard_filename(split, shard, num_shards)
    if not shard_done(stage, split, shard, num_shards):
      raise RuntimeError(f"shard {name} is missing in {stage}")
    with open(os.path.join(stage, name + ".json")) as f:
      shards.append(json.load(f))
  metadata = dict(metadata, split=split, num_examples=sum(s["num_examples"] for s in shards),
                  num_shards=num_shards, shards=shards, format_version=FORMAT_VERSION)
  _write_tfds_metadata(stage, spec, split, shards)
  _atomic_write_bytes(os.path.join(stage, METADATA_FILE),
                      json.dumps(metadata, indent=1, sort_keys=True).encode())
  for shard in shards:
    os.remove(os.path.join(stage, shard["file"] + ".json"))
  os.remove(os.path.join(stage, _PLAN_FILE))
  if os.path.exists(path):
    if not overwrite:
      raise UserInputError(f"{path} appeared while writing; delete it or pass overwrite to replace it")
    shutil.rmtree(path)
  os.replace(stage, path)


def _write_tfds_metadata(stage: str, spec, split: str, shards: List[Dict[str, Any]]) -> None:
  """dataset_info.json + features.json, as tfds.folder_dataset.write_metadata makes them."""
  template = tfds.core.ShardedFileTemplate(
      data_dir=stage, template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
      dataset_name=DATASET_NAME, filetype_suffix="tfrecord")
  split_info = tfds.core.SplitInfo(
      name=split, shard_lengths=[s["num_examples"] for s in shards],
      num_bytes=sum(s["num_bytes"] for s in shards), filename_template=template)
  tfds.folder_dataset.write_metadata(
      data_dir=stage, features=spec, split_infos=[split_info], filename_template=template,
      version="1.0.0", check_data=False,
      description="Image features computed by cnf_jax.extract; see metadata.json.")


def write(path: str, features: np.ndarray, labels: np.ndarray, index: np.ndarray, *,
          metadata: Dict[str, Any], coarse_labels: Optional[np.ndarray] = None,
          attributes: Optional[Dict[str, np.ndarray]] = None, num_shards: Optional[int] = None,
          split: Optional[str] = None, transform: Optional[Dict[str, np.ndarray]] = None,
          overwrite: bool = False) -> None:
  """Writes a feature dataset held in memory.

  features float32 [N, D]; labels, index, coarse_labels, attributes[name] int [N].
  metadata must have 'class_names' (and 'coarse_class_names' with coarse_labels);
  'dim' is filled in. `transform` (e.g. PCA arrays) is saved as transform.npz.
  """
  features = np.asarray(features, dtype=np.float32)
  if features.ndim != 2:
    raise UserInputError(f"features must be [N, D], got shape {features.shape}")
  n, dim = features.shape
  columns = {"feature": features, "label": np.asarray(labels, np.int64), "index": np.asarray(index, np.int64)}
  if coarse_labels is not None:
    columns["coarse_label"] = np.asarray(coarse_labels, np.int64)
  if attributes:
    columns["attributes"] = {k: np.asarray(v, np.int64) for k, v in attributes.items()}
  arg_names = {"label": "labels", "index": "index", "coarse_label": "coarse_labels", "attributes": "attributes"}
  for name, col in columns.items():
    for c in (col.values() if isinstance(col, dict) else [col]):
      if len(c) != n:
        raise UserInputError(f"{arg_names.get(name, name)} has {len(c)} rows but features has {n}")
  if not np.all(np.isfinite(features)):
    raise UserInputError("features contain NaN or Inf; fix the extractor output before writing")
  if "class_names" not in metadata:
    raise UserInputError("metadata needs 'class_names' (a list of label names)")
  if coarse_labels is not None and "coarse_class_names" not in metadata:
    raise UserInputError("coarse_labels given without metadata['coarse_class_names']")
  split = split or metadata.get("split", "train")
  metadata = dict(metadata, dim=dim, attribute_names=sorted(attributes) if attributes else None)
  spec = _spec_from_metadata(metadata)
  num_shards = num_shards or num_shards_for(n)
  if os.path.isdir(staging_dir(path)):  # Leftover of a failed in-memory write: nothing to resume.
    shutil.rmtree(staging_dir(path))
  stage = begin(path, {"num_examples": n, "num_shards": num_shards, "split": split}, overwrite=overwrite)
  try:
    for shard, (start, stop) in enumerate(shard_bounds(n, num_shards)):
      chunk = {k: ({a: v[start:stop] for a, v in c.items()} if isinstance(c, dict) else c[start:stop])
               for k, c in columns.items()}
      write_shard(stage, spec, split, shard, num_shards, chunk)
    if transform is not None:
      save_transform(stage, transform)
    finish(path, spec, split, num_shards, metadata, overwrite=overwrite)
  except BaseException:
    shutil.rmtree(stage, ignore_errors=True)  # In-memory writes have nothing to resume.
    raise


def save_transform(directory: str, arrays: Dict[str, np.ndarray]) -> None:
  """Saves a feature transform (e.g. PCA mean and components) beside the shards."""
  with atomic_write(os.path.join(directory, TRANSFORM_FILE), "wb") as f:
    np.savez(f, **arrays)


# ---------------------------------------------------------------------------
# Reading


def read_metadata(path: str) -> Dict[str, Any]:
  """metadata.json of a feature dataset; UserInputError naming the path if absent."""
  meta_path = os.path.join(path, METADATA_FILE)
  if not os.path.isdir(path):
    hint = ""
    if os.path.isdir(staging_dir(path)):
      hint = f" ({staging_dir(path)} holds an unfinished extraction: rerun the extractor to finish it)"
    raise UserInputError(f"no feature dataset at {path}{hint}; build it with `python -m cnf_jax.extract`")
  if not os.path.exists(meta_path):
    raise UserInputError(f"{path} has no {METADATA_FILE}; it is not a complete feature dataset, rebuild it")
  with open(meta_path) as f:
    return json.load(f)


def load_transform(path: str) -> Optional[Dict[str, np.ndarray]]:
  """The arrays of transform.npz of a dataset, or None."""
  file = os.path.join(path, TRANSFORM_FILE)
  if not os.path.exists(file):
    return None
  with np.load(file) as z:
    return {k: z[k] for k in z.files}


def _read_shard(path: str, shard: Dict[str, Any], *, verify_crc: bool) -> List[bytes]:
  file = os.path.join(path, shard["file"])
  if not os.path.exists(file):
    raise UserInputError(f"shard {file} is missing; rebuild the dataset")
  with open(file, "rb") as f:
    blob = f.read()
  if len(blob) != shard["num_bytes"] or hashlib.sha256(blob).hexdigest() != shard["sha256"]:
    raise UserInputError(
        f"shard {file} is truncated or corrupt ({len(blob)} bytes, expected {shard['num_bytes']} "
        "with a different checksum); rebuild the dataset")
  try:
    records = tfrecord.decode_records(blob, verify_crc=verify_crc)
  except tfrecord.CorruptRecordError as e:
    raise UserInputError(f"shard {file} is corrupt: {e}; rebuild the dataset") from None
  if len(records) != shard["num_examples"]:
    raise UserInputError(f"shard {file} has {len(records)} examples, metadata says {shard['num_examples']}")
  return records


def _columns(spec, records: List[bytes], metadata: Dict[str, Any]) -> Dict[str, Any]:
  examples = [spec.deserialize_example_np(r) for r in records]
  dim = metadata["dim"]
  cols = {
      "features": np.stack([e["feature"] for e in examples]) if examples else np.zeros((0, dim), np.float32),
      "labels": np.array([e["label"] for e in examples], dtype=np.int64),
      "index": np.array([e["index"] for e in examples], dtype=np.int64),
      "coarse_labels": None,
      "attributes": {},
  }
  if metadata.get("coarse_class_names") is not None:
    cols["coarse_labels"] = np.array([e["coarse_label"] for e in examples], dtype=np.int64)
  for name in metadata.get("attribute_names") or []:
    cols["attributes"][name] = np.array([e["attributes"][name] for e in examples], dtype=np.int64)
  return cols


def iterate(path: str, batch_size: int, *, verify_crc: bool = False,
            drop_remainder: bool = False) -> Iterator[FeatureSet]:
  """Streams a dataset shard by shard in on-disk order, as FeatureSets of `batch_size` rows."""
  metadata = read_metadata(path)
  spec = _spec_from_metadata(metadata)
  pending: List[bytes] = []
  for shard in metadata["shards"]:
    pending += _read_shard(path, shard, verify_crc=verify_crc)
    while len(pending) >= batch_size:
      batch, pending = pending[:batch_size], pending[batch_size:]
      yield FeatureSet(**_columns(spec, batch, metadata), metadata=metadata)
  if pending and not drop_remainder:
    yield FeatureSet(**_columns(spec, pending, metadata), metadata=metadata)


# Feature sets kept by load_cached, newest last: a sweep's runs share a process and each run
# reads the same datasets (Table 1: three datasets x 30 runs).
_CACHE: "collections.OrderedDict[Tuple[str, str], FeatureSet]" = collections.OrderedDict()
CACHE_SIZE = 8


def load_cached(path: str) -> FeatureSet:
  """`load(path)`, read once per process while its metadata.json stays the same.

  The arrays are shared by every caller and therefore read-only (writing to them raises).
  Keyed by the real path and the text of metadata.json, which holds every shard's sha256: a
  rebuilt dataset has new metadata and is read again. At most CACHE_SIZE sets are kept.
  """
  real = os.path.realpath(path)
  meta_path = os.path.join(real, METADATA_FILE)
  try:
    with open(meta_path) as f:
      key = (real, f.read())
  except OSError:
    return load(path)   # missing or unreadable: load's error names the problem
  if key in _CACHE:
    _CACHE.move_to_end(key)
    return _CACHE[key]
  fs = load(path)
  for array in [fs.features, fs.labels, fs.index, fs.coarse_labels, *fs.attributes.values()]:
    if array is not None:
      array.flags.writeable = False
  _CACHE[key] = fs
  while len(_CACHE) > CACHE_SIZE:
    _CACHE.popitem(last=False)
  return fs


def load(path: str, *, verify_crc: bool = False) -> FeatureSet:
  """Reads a whole feature dataset into memory.

  Every shard's size, sha256 and example count are checked against metadata.json.
  The sha256 covers every byte, so the per-record CRCs are only recomputed on
  request (`verify_crc`; it costs about a third of the load time).
  """
  metadata = read_metadata(path)
  spec = _spec_from_metadata(metadata)
  records: List[bytes] = []
  for shard in metadata["shards"]:
    records += _read_shard(path, shard, verify_crc=verify_crc)
  if len(records) != metadata["num_examples"]:
    raise UserInputError(f"{path} has {len(records)} examples, metadata says {metadata['num_examples']}")
  return FeatureSet(**_columns(spec, records, metadata), metadata=metadata)
