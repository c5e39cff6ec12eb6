"""benchmarks/time_to_table.py: a timed sweep + report of configs/oneclass.py on made-up features,
then the comparison of finished runs with a reference."""
import json
import os
import subprocess
import sys

import numpy as np

from tests import feature_util
from tests.cli_util import ROOT, subprocess_env

SCRIPT = os.path.join(ROOT, "benchmarks", "time_to_table.py")


def _run(*args):
  proc = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=ROOT,
                        env=subprocess_env(), timeout=600)
  lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
  return proc, lines


def test_times_a_table_then_compares_it_with_a_reference(tmp_path):
  root = tmp_path / "features"
  rng = np.random.default_rng(0)
  for split in ("train", "test"):
    y = np.repeat([0, 1], 40)
    feature_util.write(root, "cifar10", split, feature_util.clusters(rng, y, spread=2.0), y,
                       class_names=["airplane", "deer"])
  feature_util.write_tiny_imagenet(root)
  common = [f"--features_root={root}", "--classes=deer,airplane", "--seeds=0", "--arg=chosen,runlocal",
            "--set=data.backbone=toy"]
  fast, fixed = str(tmp_path / "fast"), str(tmp_path / "fixed")
  proc, lines = _run(f"--workdir={fixed}", "--set=train.steps=40", *common)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = lines[-1]
  assert summary["runs"] == 2 and summary["wall_s"] >= summary["sweep_s"] > 0 and summary["report_s"] > 0
  # wall_s is the rounded sum, the other two are rounded each: one 0.1 s step apart at most (20.8 - 16.4 - 4.3
  # is 0.10000000000000231 in floats, so the bound carries a float margin).
  assert abs(summary["wall_s"] - summary["sweep_s"] - summary["report_s"]) <= 0.1 + 1e-9
  per_class = {l["class"]: l for l in lines[:-1]}
  assert set(per_class) == {"deer", "airplane"}
  for c in ("deer", "airplane"):   # the script's figure is the run's own results.json
    with open(os.path.join(fixed, f"{c}-seed=0", "results.json")) as f:
      assert per_class[c]["auroc"] == round(100 * json.load(f)["auroc"]["cf"], 2)
  assert os.path.exists(os.path.join(fixed, "report"))   # the report ran
  # A second timed run into finished runs would time nothing: exit 2 with one line.
  proc, _ = _run(f"--workdir={fixed}", *common)
  assert proc.returncode == 2 and "already holds 2 finished runs" in proc.stderr and "Traceback" not in proc.stderr
  # Fewer steps, compared class by class with the reference.
  proc, lines = _run(f"--workdir={fast}", "--set=train.steps=10", f"--reference={fixed}", *common)
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = lines[-1]
  diffs = [l["diff"] for l in lines[:-1]]
  assert all(l["diff"] == round(l["auroc"] - l["reference_auroc"], 2) for l in lines[:-1])
  assert summary["max_abs_diff"] == max(abs(d) for d in diffs) > 0
  assert summary["within_tolerance"] == (summary["max_abs_diff"] <= 0.3)
  assert summary["compute_dtype"] in (["float32"], ["bfloat16"])
  timed_summary = summary
  # --existing reads finished runs without running: a run against itself differs by 0, and the
  # times the timed run kept beside its runs come back.
  proc, lines = _run(f"--workdir={fast}", "--existing", f"--reference={fast}", *common)
  assert proc.returncode == 0 and lines[-1]["max_abs_diff"] == 0 and lines[-1]["within_tolerance"]
  for key in ("wall_s", "sweep_s", "report_s", "arg", "set"):
    assert lines[-1][key] == timed_summary[key]
  # A reference that lacks the runs fails after the timed run: its times are on disk all the same.
  other = str(tmp_path / "other")
  proc, _ = _run(f"--workdir={other}", "--set=train.steps=10", f"--reference={tmp_path / 'missing'}", *common)
  assert proc.returncode == 2 and "is missing" in proc.stderr
  with open(os.path.join(other, "time_to_table.times.json")) as f:
    kept = json.load(f)
  assert kept["wall_s"] >= kept["sweep_s"] > 0 and kept["set"] == ["train.steps=10", "data.backbone=toy"]
  # --existing on a folder with no timed run prints no times.
  os.remove(os.path.join(other, "time_to_table.times.json"))
  proc, lines = _run(f"--workdir={other}", "--existing", *common)
  assert proc.returncode == 0 and "wall_s" not in lines[-1]
