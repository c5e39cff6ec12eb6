"""The on-disk feature dataset: round trips, TFDS metadata, corruption, resumption."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cnf_jax.data import feature_dataset as fd
from cnf_jax.data import tfrecord
from cnf_jax.errors import UserInputError


def _make(tmp_path, n=37, dim=5, num_shards=3, **kw):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n, dim)).astype(np.float32)
  labels = rng.integers(0, 4, size=n)
  index = np.arange(n) * 7
  path = fd.dataset_dir(str(tmp_path), "toy", "train", "pixels")
  meta = {"class_names": ["a", "b", "c", "d"], "backbone": "pixels", "resolution": 2}
  meta.update(kw.pop("metadata", {}))
  fd.write(path, x, labels, index, metadata=meta, num_shards=num_shards, **kw)
  return path, x, labels, index


def test_dataset_dir_naming():
  assert fd.dataset_dir("/r", "cifar10", "test", "effnet_lite0") == "/r/cifar10-test-effnet_lite0"


def test_crc32c_known_values():
  # RFC 3720 / iSCSI check value, and the CRC of 32 zero bytes (RFC 3720 B.4).
  assert int(tfrecord.crc32c_many([b"123456789"])[0]) == 0xE3069283
  assert int(tfrecord.crc32c_many([bytes(32)])[0]) == 0x8A9136AA


def test_round_trip_with_coarse_labels_and_attributes(tmp_path):
  n = 37
  coarse = np.arange(n) % 2
  male = (np.arange(n) % 3 == 0).astype(np.int64)
  path, x, labels, index = _make(tmp_path, n=n, coarse_labels=coarse, attributes={"Male": male},
                                 metadata={"coarse_class_names": ["even", "odd"]})
  fs = fd.load(path)
  assert len(fs) == n
  assert fs.features.dtype == np.float32 and fs.features.shape == (n, 5)
  np.testing.assert_array_equal(fs.features, x)
  np.testing.assert_array_equal(fs.labels, labels)
  np.testing.assert_array_equal(fs.index, index)
  np.testing.assert_array_equal(fs.coarse_labels, coarse)
  np.testing.assert_array_equal(fs.attributes["Male"], male)
  assert fs.metadata["class_names"] == ["a", "b", "c", "d"]
  assert fs.metadata["dim"] == 5 and fs.metadata["backbone"] == "pixels"
  assert [s["num_examples"] for s in fs.metadata["shards"]] == [12, 13, 12]
  assert not os.path.exists(fd.staging_dir(path))


def test_tfds_builder_reads_the_metadata(tmp_path):
  path, *_ = _make(tmp_path)
  builder = tfds.builder_from_directory(path)
  split = builder.info.splits["train"]
  assert split.num_examples == 37 and split.shard_lengths == [12, 13, 12]
  assert builder.info.features["feature"].shape == (5,)
  assert builder.info.features["label"].names == ["a", "b", "c", "d"]
  shard_files = sorted(f for f in os.listdir(path) if ".tfrecord-" in f)
  assert shard_files == [f"features-train.tfrecord-0000{i}-of-00003" for i in range(3)]


def test_iterate_matches_load(tmp_path):
  path, x, labels, _ = _make(tmp_path)
  batches = list(fd.iterate(path, batch_size=10))
  assert [len(b) for b in batches] == [10, 10, 10, 7]
  np.testing.assert_array_equal(np.concatenate([b.features for b in batches]), x)
  np.testing.assert_array_equal(np.concatenate([b.labels for b in batches]), labels)
  assert [len(b) for b in fd.iterate(path, batch_size=10, drop_remainder=True)] == [10, 10, 10]


def test_load_cached_reads_once_shares_read_only_arrays_and_sees_a_rebuild(tmp_path, monkeypatch):
  path, x, labels, _ = _make(tmp_path)
  reads = []
  real_load = fd.load
  monkeypatch.setattr(fd, "load", lambda p, **kw: reads.append(p) or real_load(p, **kw))
  first = fd.load_cached(path)
  assert fd.load_cached(os.path.join(path, "")) is first and len(reads) == 1   # same dataset: one read
  np.testing.assert_array_equal(first.features, x)
  with pytest.raises(ValueError, match="read-only"):
    first.features[0, 0] = 1.0
  # Rebuilt in place with other rows: new metadata (shard checksums), so it is read again.
  import shutil
  shutil.rmtree(path)
  fd.write(path, -x, labels, np.arange(len(x)), metadata={"class_names": ["a", "b", "c", "d"],
                                                           "backbone": "pixels", "resolution": 2})
  again = fd.load_cached(path)
  assert len(reads) == 2
  np.testing.assert_array_equal(again.features, -x)


def test_truncated_shard_is_named(tmp_path):
  path, *_ = _make(tmp_path)
  shard = os.path.join(path, fd.shard_filename("train", 1, 3))
  with open(shard, "rb") as f:
    blob = f.read()
  with open(shard, "wb") as f:
    f.write(blob[:-10])
  with pytest.raises(UserInputError, match="00001-of-00003.*truncated or corrupt"):
    fd.load(path)


def test_flipped_byte_is_detected_by_checksum_and_by_crc(tmp_path):
  path, *_ = _make(tmp_path)
  shard = os.path.join(path, fd.shard_filename("train", 2, 3))
  blob = bytearray(open(shard, "rb").read())
  blob[40] ^= 0xFF
  open(shard, "wb").write(bytes(blob))
  with pytest.raises(UserInputError, match="00002-of-00003"):
    fd.load(path)
  # Without the checksum, the record CRC still catches it.
  with pytest.raises(tfrecord.CorruptRecordError, match="CRC mismatch in 1 record"):
    tfrecord.decode_records(bytes(blob))


def test_missing_dir_and_existing_dir(tmp_path):
  missing = os.path.join(str(tmp_path), "nothing-here")
  with pytest.raises(UserInputError, match="nothing-here"):
    fd.load(missing)
  path, *_ = _make(tmp_path)
  with pytest.raises(UserInputError, match="already exists"):
    _make(tmp_path)
  _make(tmp_path, overwrite=True)  # Replaces it.
  assert fd.load(path).metadata["num_examples"] == 37


def test_bad_inputs_leave_nothing_behind(tmp_path):
  path = os.path.join(str(tmp_path), "bad")
  with pytest.raises(UserInputError, match="NaN"):
    fd.write(path, np.full((3, 2), np.nan, np.float32), [0, 0, 0], [0, 1, 2], metadata={"class_names": ["a"]})
  with pytest.raises(UserInputError, match="labels has 2 rows"):
    fd.write(path, np.zeros((3, 2), np.float32), [0, 0], [0, 1, 2], metadata={"class_names": ["a"]})
  with pytest.raises(UserInputError, match="label 4 is outside 0..3"):
    fd.write(path, np.zeros((2, 2), np.float32), [0, 4], [0, 1], metadata={"class_names": list("abcd")})
  assert os.listdir(str(tmp_path)) == []


def test_resume_keeps_finished_shards_and_refuses_a_different_plan(tmp_path):
  path = os.path.join(str(tmp_path), "ds")
  spec = fd.feature_spec(2, ["a"])
  plan = {"num_examples": 4, "num_shards": 2, "split": "train"}
  stage = fd.begin(path, plan)
  cols = {"feature": np.ones((2, 2), np.float32), "label": np.zeros(2, np.int64), "index": np.arange(2)}
  fd.write_shard(stage, spec, "train", 0, 2, cols)
  assert fd.shard_done(stage, "train", 0, 2) and not fd.shard_done(stage, "train", 1, 2)
  # Same plan: the staging directory and its finished shard are kept.
  assert fd.begin(path, plan) == stage and fd.shard_done(stage, "train", 0, 2)
  with pytest.raises(UserInputError, match="different settings \\(num_examples\\)"):
    fd.begin(path, dict(plan, num_examples=5))
  with pytest.raises(UserInputError, match="unfinished extraction"):
    fd.load(path)
  fd.write_shard(stage, spec, "train", 1, 2, dict(cols, index=np.arange(2, 4)))
  fd.finish(path, spec, "train", 2, {"class_names": ["a"], "dim": 2, "backbone": "x"})
  np.testing.assert_array_equal(fd.load(path).index, np.arange(4))


def test_reader_imports_without_torch_and_tensorflow():
  code = ("import sys; import cnf_jax.data.feature_dataset; "
          "print('torch' in sys.modules, 'tensorflow' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.split() == ["False", "False"]


def test_tensorflow_reads_the_files_where_installed(tmp_path):
  """Skipped without TensorFlow; checked by hand with tensorflow==2.21.0 (see extract README)."""
  pytest.importorskip("tensorflow")
  path, x, labels, index = _make(tmp_path)
  ds = tfds.builder_from_directory(path).as_dataset(split="train", shuffle_files=False)
  examples = list(tfds.as_numpy(ds))
  np.testing.assert_array_equal(np.stack([e["feature"] for e in examples]), x)
  np.testing.assert_array_equal([e["index"] for e in examples], index)
