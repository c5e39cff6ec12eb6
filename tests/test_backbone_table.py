"""benchmarks/backbone_table.py: the feature set is chosen by the label-free criterion of the
baselines and Flow, never by test AUROC."""
import json
import os
import subprocess
import sys

from tests.cli_util import ROOT, subprocess_env

SCRIPT = os.path.join(ROOT, "benchmarks", "backbone_table.py")


def _write(root, run, criterion, auroc):
  os.makedirs(root / run)
  (root / run / "results.json").write_text(json.dumps({
      "selection": {"criterion": "heldout_auroc", "values": criterion}, "auroc": auroc}))


def test_chosen_by_criterion_not_by_test_auroc(tmp_path):
  # Set b has the better criterion but the worse test AUROC: b is chosen; CF is not looked at.
  for run in ("cat-seed=0", "deer-seed=0"):
    _write(tmp_path / "a", run, {"flow": 0.80, "knn": 0.70, "cf": 0.99}, {"flow": 0.95, "knn": 0.90, "cf": 0.5})
    _write(tmp_path / "b", run, {"flow": 0.85, "knn": 0.75, "cf": 0.10}, {"flow": 0.85, "knn": 0.80, "cf": 0.5})
  out = tmp_path / "table.md"
  proc = subprocess.run([sys.executable, SCRIPT, f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}", "--methods=flow,knn",
                         f"--out={out}"], capture_output=True, text=True, cwd=ROOT, env=subprocess_env(), timeout=120)
  assert proc.returncode == 0, proc.stderr
  rows = {l.split("|")[1].strip(): l for l in out.read_text().splitlines() if l.startswith("| a") or l.startswith("| b")}
  assert set(rows) == {"a", "b (chosen)"}
  assert "80.00 / 95.00" in rows["a"] and "| 75.00 | 92.50 |" in rows["a"]
  assert "| 80.00 | 82.50 |" in rows["b (chosen)"]
  # Different runs in the roots: refused.
  _write(tmp_path / "b", "ship-seed=0", {"flow": 0.9, "knn": 0.9}, {"flow": 0.9, "knn": 0.9})
  proc = subprocess.run([sys.executable, SCRIPT, f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}", "--methods=flow,knn"],
                        capture_output=True, text=True, cwd=ROOT, env=subprocess_env(), timeout=120)
  assert proc.returncode != 0 and "hold different runs" in proc.stderr
