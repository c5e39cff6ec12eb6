"""The benchmark shell scripts: the commands they issue.

A stand-in Python records each command (what the commands do is tested elsewhere: extraction
in test_extract.py, sweeps in test_sweep.py). make_features.sh / make_table_features.sh: every
dataset lands where the configs read it (feature_dataset.dataset_dir), with the requested
backbone, and the contrastive and CelebA sets pass the 32 px bottleneck. results/table1/run.sh
and results/backbones/run.sh: the sweeps' settings and the report over their roots.
results/table1/seeds.py: runs.jsonl from sweep roots, and the table over seeds from it.
kde_speed.py: one JSON line timing both KDEs on small data.
pca_speed.py: one JSON line timing cdist and the BLAS distances of the PCA baseline.
mcd_speed.py: one JSON line per dimension timing sklearn's MinCovDet and this code's search.
results/cf_factors/eps_raw.py: CF's eps runs collected, and the eps each class's criterion chooses.
"""
import json
import os
import shutil
import subprocess
import sys

from cnf_jax.data.feature_dataset import dataset_dir
from cnf_jax.tasks.oneclass import CIFAR10_CLASSES
from tests.cli_util import ROOT

FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
echo '{"images": 0}'
"""


def _commands(tmp_path, script, *args, backbone="effnet_lite2", data="/data"):
  fake = tmp_path / "python"
  fake.write_text(FAKE_PYTHON)
  fake.chmod(0o755)
  calls = tmp_path / "calls.txt"
  env = dict(os.environ, PYTHON=str(fake), CALLS=str(calls), BACKBONE=backbone)
  proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", script), str(tmp_path / "root"), data, *args],
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


def test_table1_runs_every_method_on_one_feature_set_and_reports_both_roots(tmp_path):
  out = tmp_path / "report"
  commands = _commands(tmp_path, "results/table1/run.sh", "effnet_lite2_pca256", str(out), data=str(tmp_path / "work"))
  flows, baselines, report = commands
  for sweep, methods in ((flows, "cf,flow,flow_ratio,oe"), (baselines, "mse,mse_ratio,kde,pca,knn,lof,abod,mcd")):
    assert sweep[1] == "cnf_jax.sweep" and _flag(sweep, "config") == "configs/oneclass.py"
    assert _flag(sweep, "arg") == "chosen,fast" and "--quiet" in sweep
    sets = [a.split("=", 1)[1] for a in sweep if a.startswith("--set=")]
    assert sets == [f"data.features_root={tmp_path / 'root'}", "data.backbone=effnet_lite2_pca256", f"methods={methods}"]
  assert _flag(flows, "workdir") == str(tmp_path / "work" / "effnet_lite2_pca256" / "flows")
  assert report[1] == "cnf_jax.report" and _flag(report, "workdir") == _flag(flows, "workdir")
  assert _flag(report, "also") == _flag(baselines, "workdir") and _flag(report, "out") == str(out)
  walls = [json.loads(line) for line in open(out / "wall.jsonl")]
  assert [w["sweep"] for w in walls] == ["flows", "baselines"] and all(w["features"] == "effnet_lite2_pca256" for w in walls)


def test_backbones_run_takes_feature_sets_and_tables_them(tmp_path):
  script = tmp_path / "backbones" / "run.sh"   # a copy: it appends to wall.jsonl next to itself
  script.parent.mkdir()
  shutil.copy(os.path.join(ROOT, "benchmarks", "results", "backbones", "run.sh"), script)
  commands = _commands(tmp_path, str(script), "effnet_lite0_pca64", "effnet_lite0", data=str(tmp_path / "work"))
  sweeps, (table,) = commands[:-1], commands[-1:]
  assert [next(a for a in c if a.startswith("--set=data.backbone=")) for c in sweeps] == [
      "--set=data.backbone=effnet_lite0_pca64", "--set=data.backbone=effnet_lite0"]
  assert table[-3:-1] == [f"effnet_lite0_pca64={tmp_path / 'work' / 'effnet_lite0_pca64'}",
                          f"effnet_lite0={tmp_path / 'work' / 'effnet_lite0'}"]


def _write_run(root, cls, seed, aurocs):
  run = root / f"{cls}-seed={seed}"
  run.mkdir(parents=True)
  (run / "config.json").write_text(json.dumps({"seed": seed, "data": {"inlier_class": cls}}))
  (run / "results.json").write_text(json.dumps({
      "methods": list(aurocs), "auroc": aurocs, "aupr": aurocs, "fpr95": {m: 0.5 for m in aurocs},
      "selection": {"values": {m: 0.7 for m in aurocs}}, "feature_dim": 1280, "eps": 100.0}))


def _seeds(*args):
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "results", "table1", "seeds.py"), *args],
                        capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert proc.returncode == 0, proc.stderr
  return proc.stdout


def test_table1_seeds_collects_sweep_roots_into_runs_jsonl_and_tables_each_methods_complete_seeds(tmp_path):
  classes = CIFAR10_CLASSES
  runs = tmp_path / "runs.jsonl"
  # Seed 0 is only in runs.jsonl (its sweep roots are gone); one stale seed-1 line gets replaced.
  lines = [{"class": c, "seed": 0, "method": m, "sweep": "old", "auroc": a, "criterion": 0.6}
           for c in classes for m, a in (("cf", 0.9), ("flow", 0.85), ("kde", 0.7))]
  lines.append({"class": "airplane", "seed": 1, "method": "cf", "sweep": "old", "auroc": 0.1, "criterion": 0.6})
  runs.write_text("".join(json.dumps(line) + "\n" for line in lines))
  for i, c in enumerate(classes):
    _write_run(tmp_path / "flows", c, 1, {"cf": 0.9 + i / 1000, "flow": 0.8})
  _write_run(tmp_path / "flows", "airplane", 2, {"cf": 0.5, "flow": 0.5})  # seed 2 has one class only
  _write_run(tmp_path / "baselines", "airplane", 1, {"kde": 0.6})         # KDE: one class of seed 1
  out = _seeds(f"--runs={runs}", f"--collect={tmp_path / 'flows'}", f"--collect={tmp_path / 'baselines'}")
  assert "23 lines from 2 sweep root(s)" in out
  rows = [json.loads(line) for line in runs.read_text().splitlines()]
  assert len(rows) == 53
  airplane_cf = [r for r in rows if (r["class"], r["seed"], r["method"]) == ("airplane", 1, "cf")]
  assert airplane_cf == [{"class": "airplane", "seed": 1, "method": "cf", "sweep": "flows", "auroc": 0.9,
                          "aupr": 0.9, "fpr95": 0.5, "criterion": 0.7, "feature_dim": 1280, "eps": 100.0}]
  table = _seeds(f"--runs={runs}").splitlines()
  row = lambda label: next(line for line in table if line.startswith(f"| {label} |"))
  assert "| seed 0 | seed 1 |" in table[2] and "seed 2" not in table[2]   # no method has all of seed 2
  # CF: seed 0 90.00, seed 1 90.45 (90.0 .. 90.9); Flow 85.00 and 80.00; KDE only seed 0 is complete.
  assert row("CF").startswith("| CF | 90.00 | 90.05 |") and row("CF").endswith("| 90.23 | 2 | 90.00 | 90.45 |")
  assert row("Flow").startswith("| Flow | 82.50 |") and row("Flow").endswith("| 82.50 | 2 | 85.00 | 80.00 |")
  assert row("KDE").startswith("| KDE | 70.00 | 70.00 |") and row("KDE").endswith("| 70.00 | 1 | 70.00 | - |")
  assert row("CF - Flow") == "| CF - Flow | 2 | +7.73 | 10 of 10 | +7.50 | +5.00 (10/10), +10.45 (10/10) |"
  assert row("CF - KDE") == "| CF - KDE | 1 | +20.00 | 10 of 10 | +20.00 | +20.00 (10/10) |"
  assert table[-1] == "CF is first on 20 of 20 class-seed cells."   # CF's complete seeds: 0 and 1
  # A cell where another method leads is named with its margin.
  for r in rows:
    if (r["class"], r["seed"], r["method"]) == ("truck", 1, "flow"):
      r["auroc"] = 0.95
  runs.write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert _seeds(f"--runs={runs}").splitlines()[-1] == (
      "CF is first on 19 of 20 class-seed cells; elsewhere: Flow on truck seed 1 (+4.10).")


def test_kde_speed_times_both_kdes_and_finds_them_equal_near_the_data():
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "kde_speed.py"), "--train=60", "--test=20",
                         "--dim=8"], capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert proc.returncode == 0, proc.stderr
  record = json.loads(proc.stdout.strip().splitlines()[-1])
  assert (record["train"], record["test"], record["dim"]) == (60, 20, 8)
  assert record["tree_s"] >= 0 and record["exact_s"] >= 0 and record["max_abs_diff_nats"] < 1e-9


def test_pca_speed_times_both_distances_and_finds_the_scores_equal():
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "pca_speed.py"), "--train=60", "--test=20",
                         "--dim=8"], capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert proc.returncode == 0, proc.stderr
  record = json.loads(proc.stdout.strip().splitlines()[-1])
  assert (record["train"], record["test"], record["dim"], record["components"]) == (60, 20, 8, 8)
  assert record["cdist_s"] >= 0 and record["blas_s"] >= 0 and record["max_rel_diff"] < 1e-12


def test_mcd_speed_times_both_fits_and_finds_them_equal():
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "mcd_speed.py"), "--train=600", "--test=20",
                         "--dims=3,6"], capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert proc.returncode == 0, proc.stderr
  records = [json.loads(line) for line in proc.stdout.strip().splitlines()]
  assert [(r["train"], r["test"], r["dim"]) for r in records] == [(600, 20, 3), (600, 20, 6)]
  for r in records:   # non-singular supports: sklearn's estimate
    assert r["sklearn_s"] > 0 and r["ours_s"] > 0 and r["same_support"] and r["max_rel_diff"] < 1e-9


def test_cf_eps_raw_collects_eps_runs_chooses_by_the_criterion_and_writes_the_choice_into_table1(tmp_path):
  # Table 1's seed-0 CF runs (eps = 100) are copied in as candidates; the sweep root has the other three eps.
  table1 = tmp_path / "table1.jsonl"
  table1_lines = [{"class": c, "seed": 0, "method": "cf", "sweep": "flows", "auroc": 0.90, "aupr": 0.98,
                   "fpr95": 0.4, "criterion": 0.95, "feature_dim": 1280, "eps": 100.0} for c in ("deer", "dog")]
  table1_lines.append({**table1_lines[0], "seed": 1})
  table1.write_text("".join(json.dumps(line) + "\n" for line in table1_lines))
  runs = tmp_path / "runs_raw.jsonl"
  runs.write_text("")
  criteria = {"deer": {500.0: 0.96, 1000.0: 0.94, 1500.0: 0.93}, "dog": {500.0: 0.90, 1000.0: 0.91, 1500.0: 0.92}}
  for cls, by_eps in criteria.items():
    for eps, crit in by_eps.items():
      run = tmp_path / "root" / f"{cls}-objective.eps={eps}-seed=0"
      run.mkdir(parents=True)
      (run / "config.json").write_text(json.dumps({"seed": 0, "data": {"inlier_class": cls}, "objective": {"eps": eps}}))
      (run / "results.json").write_text(json.dumps({
          "auroc": {"cf": crit - 0.05}, "aupr": {"cf": 0.99}, "fpr95": {"cf": 0.3},
          "selection": {"values": {"cf": crit}}, "early_stopping": {"models": {"cf": {"best_step": 1000}}}}))
  script = os.path.join(ROOT, "benchmarks", "results", "cf_factors", "eps_raw.py")
  base = [sys.executable, script, f"--runs={runs}", f"--table1={table1}"]
  proc = subprocess.run(base + [f"--collect={tmp_path / 'root'}", "--from_table1"],
                        capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert proc.returncode == 0, proc.stderr
  lines = [json.loads(line) for line in runs.read_text().splitlines()]
  assert len(lines) == 8 and sorted(line["eps"] for line in lines if line["best_step"] is None) == [100.0, 100.0]
  # deer: eps 500 has the highest criterion (0.96 > 0.95 of eps 100); dog: eps 100 (0.95) beats 0.90-0.92.
  assert 'RAW_CF_EPS = {"deer": 500.0, "dog": 100.0}' in proc.stdout
  deer = next(line for line in proc.stdout.splitlines() if line.startswith("| deer |"))
  assert deer == "| deer | 95.00 / 90.00 | 96.00 / 91.00 | 94.00 / 89.00 | 93.00 / 88.00 | 500 | +1.00 | 91.00 | 1.00 |"
  assert table1.read_text() == "".join(json.dumps(line) + "\n" for line in table1_lines)   # untouched so far
  # --to_table1: deer's seed-0 line becomes its eps-500 run; dog (eps 100 chosen) and deer's seed 1 stay.
  proc = subprocess.run(base + ["--to_table1"], capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert proc.returncode == 0, proc.stderr
  after = [json.loads(line) for line in table1.read_text().splitlines()]
  assert after[0] == {**table1_lines[0], "sweep": "cf_eps_raw", "auroc": 0.91, "aupr": 0.99, "fpr95": 0.3,
                      "criterion": 0.96, "eps": 500.0}
  assert after[1:] == table1_lines[1:]
  assert "# 1 seed-0 CF lines" in proc.stdout