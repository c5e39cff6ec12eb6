"""benchmarks/adbench.py on two tiny sets in ADBench's .npz format that the test writes."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.cli_util import ROOT, subprocess_env

SCRIPT = os.path.join(ROOT, "benchmarks", "adbench.py")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import adbench  # noqa: E402  (the benchmark script is a module too)


def _write_set(path, n=160, d=4, anomalies=16, seed=0, constant_column=False):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d))
  # Anomalies far from the normal rows, each in its own direction (a cluster of them would
  # mask one another from a nearest-neighbour detector fitted on them, as in protocol unsup).
  direction = rng.normal(size=(anomalies, d))
  x[:anomalies] = 6.0 * direction / np.linalg.norm(direction, axis=1, keepdims=True)
  if constant_column:
    x[:, -1] = 3.0                       # a stuck sensor: constant everywhere
  y = np.zeros(n, int)
  y[:anomalies] = 1
  os.makedirs(os.path.dirname(path), exist_ok=True)
  np.savez(path, X=x, y=y)


def test_protocol_splits():
  y = np.array([0] * 90 + [1] * 10)
  x = np.arange(100, dtype=float)[:, None] * np.ones((1, 2))
  train, test, labels = adbench.split(x, y, "semi", seed=0, max_rows=1000)
  # semi: half the normal rows to train (no anomaly among them), the rest and every anomaly to test.
  assert len(train) == 45 and len(test) == 55 and labels.sum() == 10
  assert not set(train[:, 0]) & set(test[:, 0])
  assert set(train[:, 0]) <= set(range(90))
  train, test, labels = adbench.split(x, y, "unsup", seed=0, max_rows=1000)
  # unsup: a stratified 70/30 split, anomalies in both parts.
  assert len(train) == 70 and len(test) == 30 and labels.sum() == 3
  assert len(set(train[:, 0]) & set(range(90, 100))) == 7
  # Larger sets are subsampled first, stratified: 50 rows keep 5 anomalies.
  train, test, labels = adbench.split(x, y, "unsup", seed=1, max_rows=50)
  assert len(train) + len(test) == 50 and labels.sum() + np.isin(train[:, 0], range(90, 100)).sum() == 5
  # Another seed, another split.
  assert not np.array_equal(adbench.split(x, y, "semi", 0, 1000)[0], adbench.split(x, y, "semi", 1, 1000)[0])


def test_dev_and_holdout_sets_partition_the_names():
  names = [f"s{i}" for i in range(7)]
  dev, holdout = adbench.dev_holdout(names)
  assert sorted(dev + holdout) == sorted(names) and not set(dev) & set(holdout)
  assert len(dev) == 4


def test_runs_resumes_and_summarizes(tmp_path):
  root = tmp_path / "adbench"
  _write_set(str(root / "classical" / "1_easy.npz"), seed=0)
  _write_set(str(root / "classical" / "2_stuck.npz"), seed=1, constant_column=True)
  out = tmp_path / "res" / "runs.jsonl"
  detector = json.dumps({"steps": 20, "num_blocks": 2, "hidden": [16], "batch_size": 32})
  command = [sys.executable, SCRIPT, f"--data_root={root}", f"--out={out}", "--seeds=0",
             "--methods=flow,knn5,kde,kde_cv", "--protocols=semi,unsup", f"--detector={detector}"]
  env = subprocess_env(CNF_JAX_QUIET="1")
  proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  records = [json.loads(line) for line in open(out)]
  assert len(records) == 2 * 2 * 4
  assert all("error" not in r for r in records), [r for r in records if "error" in r]
  # The anomalies are 6 standard deviations away: every method separates them.
  assert min(r["auroc"] for r in records) > 0.9
  # The detector's records say which training noise it used ('auto' chooses one of its grid) and its dtype.
  assert all(r["noise_std"] in (0.03, 0.1, 0.3, 0.6, 1.0) for r in records if r["method"] == "flow")
  assert all(r["compute_dtype"] in ("float32", "bfloat16") for r in records if r["method"] == "flow")
  # ... and kde_cv's records the bandwidth it chose (the other baselines choose nothing).
  assert all(r["bandwidth"] > 0 for r in records if r["method"] == "kde_cv")
  assert not any("bandwidth" in r or "noise_std" in r for r in records if r["method"] in ("kde", "knn5"))
  # A rerun measures nothing new.
  again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0 and sum(1 for _ in open(out)) == len(records)
  assert '"todo": 0' in again.stdout
  summary = subprocess.run([sys.executable, SCRIPT, "--summarize", f"--out={out}"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
  assert summary.returncode == 0, summary.stderr[-2000:]
  text = open(tmp_path / "res" / "results.md").read()
  assert "## Protocol `semi`" in text and "## Protocol `unsup`" in text and "mean rank" in text
  assert os.path.getsize(tmp_path / "res" / "adbench.png") > 1000
  # --report_dir: the same report in another folder (a second view of one runs.jsonl).
  elsewhere = subprocess.run([sys.executable, SCRIPT, "--summarize", f"--out={out}", f"--report_dir={tmp_path / 'view'}"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert elsewhere.returncode == 0, elsewhere.stderr[-2000:]
  assert open(tmp_path / "view" / "results.md").read() == text
  assert os.path.getsize(tmp_path / "view" / "adbench.png") > 1000


def test_a_failing_method_is_recorded_not_fatal(tmp_path):
  x = np.random.default_rng(0).normal(size=(40, 3))
  y = np.r_[np.zeros(36, int), np.ones(4, int)]
  # knn with more neighbours than training rows raises; the benchmark records it and goes on.
  record = adbench.measure("tiny", "classical", x, y, "semi", 0, "lof", "default", {}, 1000)
  assert "error" in record and "neighbours" in record["error"] and "auroc" not in record


def test_selection_table_compares_configs_on_the_sets_all_finished():
  def record(config, set_name, auroc):
    return {"config": config, "set": set_name, "method": "cf", "protocol": "semi", "seed": 0, "auroc": auroc}
  records = [record("a", "s1", 0.9), record("a", "s2", 0.5), record("b", "s1", 0.8), record("b", "s2", 0.7),
             record("c", "s1", 0.95)]                       # c stopped after one set
  rows = adbench.selection_table(records, "cf").splitlines()[2:]
  # On s1, the one set all three finished: c 95 > a 90 > b 80; a's mean over its own sets is 70.
  assert [row.split(" | ")[0] for row in rows] == ["| c (stopped early)", "| a", "| b"]
  assert "| 2 | 70.00 | 90.00 |" in rows[1]


def test_each_selection_file_is_its_own_table(tmp_path):
  def write(name, configs):
    path = tmp_path / name
    path.write_text("".join(json.dumps({"config": c, "set": "s1", "method": "cf", "protocol": "semi", "seed": 0,
                                        "auroc": a}) + "\n" for c, a in configs))
    return str(path)
  noise = write("selection.jsonl", [("noise0.6", 0.8), ("noise0.1", 0.7)])
  architecture = write("selection_architecture.jsonl", [("default", 0.85), ("blocks8", 0.9)])
  text = adbench.selection_sections([noise, architecture], "cf")
  first, second = text.split("`selection_architecture.jsonl`")
  assert "`selection.jsonl`" in first and "| noise0.6 | 1 | 80.00 | 80.00 |" in first and "blocks8" not in first
  assert second.index("| blocks8 |") < second.index("| default |") and "noise" not in second
  assert adbench.selection_sections([], "cf") == ""


def test_a_missing_selection_file_stops_the_summary_before_it_writes(tmp_path):
  proc = subprocess.run([sys.executable, SCRIPT, "--summarize", f"--out={tmp_path / 'runs.jsonl'}",
                         f"--selection={tmp_path / 'typo.jsonl'}", f"--report_dir={tmp_path / 'report'}"],
                        cwd=ROOT, env=subprocess_env(CNF_JAX_QUIET="1"), capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "--selection: no such file" in proc.stderr and "typo.jsonl" in proc.stderr
  assert not os.path.exists(tmp_path / "report")


def test_a_method_that_failed_somewhere_is_shown_but_not_ranked(tmp_path):
  def record(set_name, method, auroc=None):
    r = {"config": "default", "set": set_name, "method": method, "protocol": "semi", "seed": 0,
         "fit_s": 1.0, "score_s": 0.0}
    if auroc is None:
      r["error"] = "UserInputError: too few rows"
    else:
      r.update(auroc=auroc, aupr=auroc / 2)
    return r
  records = [record("s1", "cf", 0.9), record("s1", "knn5", 0.8), record("s1", "mcd", 0.95),
             record("s2", "cf", 0.6), record("s2", "knn5", 0.7), record("s2", "mcd")]
  text = adbench.summarize(records, "default", str(tmp_path), {"s1", "s2"})
  # Both sets enter the means of the ranked methods: cf (90 + 60) / 2, knn5 (80 + 70) / 2.
  assert "| **mean AUROC** | 75.0 | 75.0 | 95.0 |" in text
  assert "| **mean rank** (AUROC) | 1.50 | 1.50 | - |" in text
  assert "| failures (raised / non-finite) | 0 | 0 | 1 |" in text
  assert "| s2 | 60.0 | **70.0** | - |" in text
  assert "not ranked, as they failed on some sets: mcd" in text


def test_methods_are_compared_on_the_seeds_they_all_have(tmp_path):
  def record(set_name, method, seed, auroc):
    return {"config": "default", "set": set_name, "method": method, "protocol": "semi", "seed": seed,
            "fit_s": 1.0, "score_s": 0.0, "auroc": auroc, "aupr": auroc}
  # knn5 has seeds 0-2 on s1, cf only seed 0: s1 compares seed 0 alone; s2 has both seeds for both.
  records = [record("s1", "cf", 0, 0.9), record("s1", "knn5", 0, 0.8), record("s1", "knn5", 1, 0.2),
             record("s1", "knn5", 2, 0.2), record("s2", "cf", 0, 0.6), record("s2", "cf", 1, 0.8),
             record("s2", "knn5", 0, 0.5), record("s2", "knn5", 1, 0.7)]
  text = adbench.summarize(records, "default", str(tmp_path), {"s1", "s2"})
  assert "| s1 (dev) | **90.0** | 80.0 |" in text
  assert "| s2 | **70.0** | 60.0 |" in text
  assert "| **mean AUROC** | 80.0 | 70.0 |" in text
  assert "Seeds [0, 1, 2] (2 on 1 sets, 1 on 1 sets" in text


def test_a_second_config_is_shown_as_its_own_methods(tmp_path):
  def record(method, config, auroc):
    return {"config": config, "set": "s1", "method": method, "protocol": "semi", "seed": 0,
            "fit_s": 1.0, "score_s": 0.0, "auroc": auroc, "aupr": auroc}
  records = [record("cf", "default", 0.9), record("cf", "scaled", 0.7), record("cf", "other", 0.1),
             record("knn5", "baselines", 0.8)]
  text = adbench.summarize(records, "default,scaled", str(tmp_path), {"s1"})
  # cf of 'default', then cf of 'scaled' as its own column; config 'other' is left out.
  assert "| set | cf | cf@scaled | knn5 |" in text
  assert "| s1 (dev) | **90.0** | 70.0 | 80.0 |" in text
