"""benchmarks/make_features.sh and make_table_features.sh: the extractor commands they issue.

A stand-in Python records each command (the real extraction is tests/test_extract.py's); the
test checks that every dataset lands where the configs read it (feature_dataset.dataset_dir),
with the requested backbone, and that the contrastive and CelebA sets pass the 32 px bottleneck.
"""
import os
import subprocess

from cnf_jax.data.feature_dataset import dataset_dir
from tests.cli_util import ROOT

FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
echo '{"images": 0}'
"""


def _commands(tmp_path, script, *args, backbone="effnet_lite2"):
  fake = tmp_path / "python"
  fake.write_text(FAKE_PYTHON)
  fake.chmod(0o755)
  calls = tmp_path / "calls.txt"
  env = dict(os.environ, PYTHON=str(fake), CALLS=str(calls), BACKBONE=backbone)
  proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", script), str(tmp_path / "root"), "/data", *args],
                        capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
  assert proc.returncode == 0, proc.stderr
  return [line.split() for line in calls.read_text().splitlines()]


def _flag(command, name):
  values = [a.split("=", 1)[1] for a in command if a.startswith(f"--{name}=")]
  return values[0] if values else None


def test_make_features_writes_the_datasets_the_oneclass_configs_read(tmp_path):
  commands = _commands(tmp_path, "make_features.sh", "128")
  root = str(tmp_path / "root")
  outs = {(_flag(c, "source_name"), _flag(c, "split")): c for c in commands}
  assert set(outs) == {("cifar10", "test"), ("cifar10", "train"), ("tiny_imagenet", "train")}
  for (source, split), command in outs.items():
    assert _flag(command, "out") == dataset_dir(root, source, split, "effnet_lite2")
    assert _flag(command, "backbone") == "effnet_lite2" and _flag(command, "resolution") == "128"
  # Only the contrastive set is shrunk to the inliers' 32 px.
  assert _flag(outs["tiny_imagenet", "train"], "bottleneck") == "32"
  assert _flag(outs["cifar10", "train"], "bottleneck") is None


def test_make_table_features_uses_the_backbone_and_its_tiny_imagenet_pca(tmp_path):
  commands = _commands(tmp_path, "make_table_features.sh", "128", "64")
  root = str(tmp_path / "root")
  extract = [c for c in commands if c[1] == "cnf_jax.extract"]
  pca, = [c for c in commands if c[1] == "cnf_jax.extract.pca"]
  outs = {(_flag(c, "source_name"), _flag(c, "split")): c for c in extract}
  assert set(outs) == {("cifar100", "train"), ("cifar100", "test"), ("svhn_cropped", "test"),
                       ("celeb_a", "train"), ("celeb_a", "test")}
  for (source, split), command in outs.items():
    assert _flag(command, "out") == dataset_dir(root, source, split, "effnet_lite2")
  assert _flag(outs["celeb_a", "train"], "bottleneck") == "32"
  assert _flag(pca, "fit") == dataset_dir(root, "tiny_imagenet", "train", "effnet_lite2")
  assert _flag(pca, "dims") == "64"
  assert sorted(_flag(pca, "apply").split(",")) == sorted(_flag(c, "out") for c in extract)
