"""The report: paper-shaped tables over made-up results.json files, missing runs, plots, Fig. 5 images."""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from cnf_jax import report as report_cli
from cnf_jax.reports import tables
from cnf_jax.reports import plots
from cli_util import subprocess_env
from conftest import ROOT
import feature_util


def _run(root, name, seed, *, auroc=None, by_group=None, extra=None, status="done", scores=None, **results):
  d = root / name
  d.mkdir(parents=True)
  (d / "config.json").write_text(json.dumps({"seed": seed, "task": "oneclass"}))
  if status in ("running", "done"):
    (d / "metrics.jsonl").write_text('{"step": 1}\n')
  if status == "done":
    res = {"auroc": auroc or {}, **results}
    if by_group:
      res["auroc_by_group"] = by_group
    if extra:
      res["auroc_extra"] = extra
    (d / "results.json").write_text(json.dumps(res))
  if scores is not None:
    np.savez(d / "scores.npz", **scores)
  return d


def _sweep(root):
  """Settings a, b, c x seeds 0..2 declared; a complete, b partial (done, running, empty), c never launched."""
  root.mkdir()
  (root / "sweep.json").write_text(json.dumps({"runs": [f"{s}-seed={k}" for k in range(3) for s in "abc"]}))
  names = ["a", "b", "c"]
  for k, cf in enumerate([0.90, 0.92, 0.94]):
    _run(root, f"a-seed={k}", k, auroc={"zeta": 0.5, "knn": 0.91, "flow": 0.80, "cf": cf},
         by_group={"b": {"cf": 0.70 + 0.1 * k, "flow": 0.6}, "c": {"cf": 0.95, "flow": 0.6}}, group_names=names)
  _run(root, "b-seed=0", 0, auroc={"cf": 0.85, "flow": 0.86},
       by_group={"a": {"cf": 0.80, "flow": 0.5}, "c": {"cf": 0.99, "flow": 0.5}}, group_names=names,
       extra={"svhn": {"cf": 0.9, "flow": 0.7}},
       scores={"is_anomaly": np.r_[np.zeros(50, bool), np.ones(50, bool)],
               "score_cf": np.r_[np.linspace(0, 1, 50), np.linspace(0.5, 2, 49), np.inf],
               "score_flow": np.linspace(0, 1, 100), "group": np.r_[np.ones(50), np.zeros(25), 2 * np.ones(25)]})
  _run(root, "b-seed=1", 1, status="running")
  _run(root, "b-seed=2", 2, status="empty")
  return root


def _table(markdown):
  """{row label: [cells]} of a markdown table, header under key 'header'."""
  lines = [l for l in markdown.splitlines() if l.startswith("|")]
  rows = [[c.strip() for c in l.strip("|").split("|")] for l in lines]
  return {"header": rows[0][1:], **{r[0]: r[1:] for r in rows[2:]}}


def test_tables_missing_and_best_marks_on_made_up_results(tmp_path):
  root = _sweep(tmp_path / "sweep")
  rep = tables.build_report(str(root), declared=tables.declared_run_names(str(root)))
  t = _table(rep["markdown"]["auroc"])
  assert t["header"] == ["a", "b", "c", "mean"]
  assert list(t)[1:] == ["CF", "Flow", "KNN", "zeta"]   # paper order first, unknown methods after
  # a: CF 90, 92, 94 -> 92.0 ± 1.6 (population std); KNN 91.0 is within one std of it: both bold.
  assert t["CF"][0] == "**92.0 ± 1.6**" and t["KNN"][0] == "**91.0 ± 0.0**" and t["Flow"][0] == "80.0 ± 0.0"
  # b: one of three seeds; Flow 86 > CF 85 with no std: only Flow bold.
  assert t["CF"][1] == "85.0 (1/3)" and t["Flow"][1] == "**86.0 (1/3)**" and t["KNN"][1] == "–"
  assert t["CF"][2] == "–"
  # Mean over the columns with results (a and b), no std since no seed has every column.
  assert t["CF"][3] == "**88.5***" and t["Flow"][3] == "83.0*" and t["zeta"][3] == "50.0*"
  missing = rep["missing"]
  for k in range(3):
    assert f"run c-seed={k}: never launched" in missing
  assert "run b-seed=1: running or interrupted (metrics.jsonl, no results.json)" in missing
  assert "run b-seed=2: not started (config.json only)" in missing
  assert "cell CF / b: 1 of 3 seeds" in missing and "cell CF / c: 0 of 3 seeds" in missing
  assert "cell KNN / b: 0 of 3 seeds" in missing and not any("/ a:" in m for m in missing)

  conf = _table(rep["markdown"]["confusion"])   # Table 2 shape for cf
  assert conf["header"] == ["a", "b", "c", "mean"]
  assert conf["a"] == ["–", "**80.0 ± 8.2**", "95.0 ± 0.0", "87.5 ± 4.1"]
  assert conf["b"] == ["**80.0**", "–", "99.0", "89.5"]

  extra = _table(rep["markdown"]["extra"])
  assert extra["header"] == ["svhn", "mean"] and extra["CF"] == ["**90.0**", "**90.0**"]


def test_confusion_for_another_method_and_an_empty_sweep(tmp_path):
  root = _sweep(tmp_path / "sweep")
  rep = tables.build_report(str(root), method="flow")
  assert _table(rep["markdown"]["confusion"])["a"][1] == "**60.0 ± 0.0**"
  # Without the declaration, c is unknown: only the runs that are there count.
  assert not any("c-seed" in m for m in rep["missing"])
  (tmp_path / "empty").mkdir()
  empty = tables.build_report(str(tmp_path / "empty"))
  assert empty["markdown"] == {} and empty["missing"] == []
  assert "No finished runs yet." in tables.report_markdown("x", empty)


def _report_cli(*args):
  env = subprocess_env()
  return subprocess.run([sys.executable, "-m", "cnf_jax.report", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_cli_writes_markdown_and_readable_histograms(tmp_path):
  root = _sweep(tmp_path / "sweep")
  proc = _report_cli(str(root))   # the root as an argument, the command's older form
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = root / "report"
  text = (out / "report.md").read_text()
  assert proc.stdout.strip() == text.strip()   # and printed
  assert "## AUROC (%)" in text and "run c-seed=0: never launched" in text
  assert "(scores_b.png)" in text and "(scores_a.png)" not in text   # a has no scores.npz: a note instead
  assert "no score histogram for a-seed=0" in text
  with Image.open(out / "scores_b.png") as im:
    assert im.size[0] > 400 and im.size[1] > 200
  bad = _report_cli(str(tmp_path / "nothing"))
  assert bad.returncode == 2 and bad.stderr.startswith("error: sweep root") and "Traceback" not in bad.stderr


def test_aupr_and_fpr95_tables_mark_their_own_best(tmp_path):
  # FPR95: lower is better, so the bold cell is the smallest; runs written before the metric was
  # recorded (no "fpr95" in results.json) leave their cells empty instead of failing.
  root = tmp_path / "sweep"
  root.mkdir()
  for k, (a_cf, a_knn, f_cf, f_knn) in enumerate([(0.60, 0.80, 0.10, 0.50), (0.62, 0.82, 0.12, 0.52)]):
    _run(root, f"a-seed={k}", k, auroc={"cf": 0.9, "knn": 0.8}, aupr={"cf": a_cf, "knn": a_knn},
         fpr95={"cf": f_cf, "knn": f_knn})
  _run(root, "old-seed=0", 0, auroc={"cf": 0.7})
  rep = tables.build_report(str(root))
  aupr, fpr = _table(rep["markdown"]["aupr"]), _table(rep["markdown"]["fpr95"])
  assert aupr["header"] == fpr["header"] == ["a", "old", "mean"]
  assert aupr["KNN"][0] == "**81.0 ± 1.0**" and aupr["CF"][0] == "61.0 ± 1.0" and aupr["CF"][1] == "–"
  assert fpr["CF"][0] == "**11.0 ± 1.0**" and fpr["KNN"][0] == "51.0 ± 1.0"
  text = tables.report_markdown(str(root), rep)
  assert "## AUPR (%), anomalies the positive class" in text and "(lower is better)" in text
  status = tables.summarize(tables.load_runs(str(root)), "fpr95")
  assert status["a"]["cf"] == {"mean": pytest.approx(0.11), "std": pytest.approx(0.01), "n": 2}
  assert "old" not in status   # its run has no fpr95


def test_cli_flags_json_and_bad_flags(tmp_path, capsys):
  root = _sweep(tmp_path / "sweep")
  md = _report_cli(f"--workdir={root}", "--out", str(tmp_path / "md"), "--method=flow", "--noplots")
  assert md.returncode == 0, md.stderr[-2000:]
  assert sorted(os.listdir(tmp_path / "md")) == ["report.md"]   # no PNGs
  assert "Table 2 shape), method Flow" in md.stdout and "| a | – | **60.0 ± 0.0** |" in md.stdout
  assert not (root / "report").exists()

  as_json = _report_cli(f"--workdir={root}", "--json")
  assert as_json.returncode == 0, as_json.stderr[-2000:]
  summary = json.loads(as_json.stdout)
  assert summary["runs"] == {"done": 4, "running": 1, "empty": 1}
  assert summary["auroc"]["a"]["cf"]["n"] == 3 and summary["auroc"]["a"]["cf"]["mean"] == pytest.approx(0.92)
  assert summary["aupr"] == {} and summary["fpr95"] == {}   # these made-up runs record AUROC only
  assert not (root / "report").exists()   # --json writes nothing

  for args, message in [((), "--workdir is required"),
                        ((f"--workdir={root}", str(tmp_path)), "two sweep roots"),
                        ((str(root), "--bogus"), "Unknown command line flag 'bogus'"),
                        ((str(root), "--examples=many"), "flag --examples=many: invalid literal"),
                        ((str(root), "--study=tabular", "--json"), "--json: not used by --study reports"),
                        ((str(root), "--study=fig9"), "flag --study=fig9: value should be one of")]:
    assert report_cli.main(args) == 2, args   # in this process: the same main, without a start-up each
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, (args, err)


def _image_zip(path, per_class=4):
  """toy/test/{cat,dog}/img_<i>.png: solid 6x6 images whose red value is 10 * (position in the source)."""
  with zipfile.ZipFile(path, "w") as z:
    pos = 0
    for label in ("cat", "dog"):
      for i in range(per_class):
        im = Image.new("RGB", (6, 6), (10 * pos, 0, 0))
        import io
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        z.writestr(f"toy/test/{label}/img_{i}.png", buf.getvalue())
        pos += 1
  return str(path)


def test_fig5_examples_read_back_from_a_tiny_feature_dataset_and_zip(tmp_path):
  zip_path = _image_zip(tmp_path / "images.zip")
  root = tmp_path / "features"
  rng = np.random.default_rng(0)
  y = np.repeat([0, 1], 4)
  detail = f"zip:{zip_path}:test"
  for split in ("train", "test"):
    feature_util.write(root, "toy", split, feature_util.clusters(rng, y), y, class_names=["cat", "dog"],
                       source_detail=detail)
  feature_util.write_tiny_imagenet(root)
  config = {"seed": 0, "task": "oneclass", "data": {
      "inlier_source": "toy", "inlier_class": "cat", "contrastive_source": "tiny_imagenet",
      "contrastive_split": "train", "backbone": feature_util.BACKBONE, "features_root": str(root),
      "train_limit": 0, "contrastive_limit": 0, "test_limit": 0}}
  run_dir = tmp_path / "sweep" / "cat-seed=0"
  # Test rows 0..3 are cats (inliers), 4..7 dogs; scores chosen so that the order is known.
  score = np.array([0.3, 0.1, 0.4, 0.2, 0.9, 0.5, 0.8, 0.6])
  _run(tmp_path / "sweep", "cat-seed=0", 0, auroc={"cf": 1.0},
       scores={"is_anomaly": y == 1, "score_cf": score, "group": y})
  (run_dir / "config.json").write_text(json.dumps(config))
  run = tables.load_runs(str(tmp_path / "sweep"))[0]

  def red(groups):
    return [[int(im[0, 0, 0]) // 10 for im, _ in images] for _, images in groups]

  # Without test_index.npz (older runs) the index comes from the task's data, loaded again.
  groups = plots.example_images(run, "cf", 2, {})
  assert red(groups) == [[1, 3], [5, 7], [2, 0]]
  assert [s for _, s in groups[0][1]] == [0.1, 0.2]
  # With test_index.npz: rows map to source positions (here reversed) and to the listed source.
  np.savez(run_dir / "test_index.npz", source_id=np.zeros(8, np.int64), index=np.arange(8)[::-1])
  results = json.loads((run_dir / "results.json").read_text())
  (run_dir / "results.json").write_text(json.dumps(dict(results, test_sources=[detail])))
  run = tables.load_runs(str(tmp_path / "sweep"))[0]
  assert red(plots.example_images(run, "cf", 2, {})) == [[6, 4], [2, 0], [5, 7]]

  path = tables.write_report(str(tmp_path / "sweep"))
  text = open(path).read()
  assert "(examples_cf.png)" in text and "no example images" not in text
  with Image.open(os.path.join(os.path.dirname(path), "examples_cf.png")) as im:
    assert im.size[0] > 300
  # --examples=0: the report without the image figure (it once failed on a 0-column figure).
  path = tables.write_report(str(tmp_path / "sweep"), str(tmp_path / "no_examples"), examples=0)
  text = open(path).read()
  assert "examples_cf.png" not in text and "Scores, " in text
  assert not os.path.exists(tmp_path / "no_examples" / "examples_cf.png")


def test_method_order():
  assert tables.order_methods(["zeta", "knn", "mse_ratio", "oe", "flow", "cf", "abod"]) == \
      ["cf", "flow", "oe", "mse_ratio", "knn", "abod", "zeta"]


def test_also_merges_methods_run_as_separate_sweeps(tmp_path):
  """Flows in one root, baselines of the same runs in another: one table; a method in both roots is refused."""
  flows, base = tmp_path / "flows", tmp_path / "base"
  for k in range(2):
    _run(flows, f"a-seed={k}", k, auroc={"cf": 0.90 + 0.02 * k}, by_group={"b": {"cf": 0.8}}, methods=["cf"])
    _run(base, f"a-seed={k}", k, auroc={"mse": 0.85}, by_group={"b": {"mse": 0.7}}, methods=["mse"])
  _run(base, "z-seed=0", 0, auroc={"mse": 0.5})
  built = tables.build_report(str(flows), also=[str(base)])
  table = _table(built["markdown"]["auroc"])
  assert table["header"][:2] == ["a", "z"]
  assert table["CF"][0] == "**91.0 ± 1.0**" and table["MSE"][0] == "85.0 ± 0.0"
  assert table["MSE"][1] == "**50.0**" and table["CF"][1] == "–"
  run_a = next(r for r in built["runs"] if r["run"] == "a-seed=0")
  assert run_a["results"]["auroc_by_group"]["b"] == {"cf": 0.8, "mse": 0.7}
  assert run_a["results"]["methods"] == ["cf", "mse"]

  _run(tmp_path / "clash", "a-seed=0", 0, auroc={"cf": 0.5})
  with pytest.raises(tables.UserInputError, match="method 'cf' has results in two sweep roots"):
    tables.build_report(str(flows), also=[str(tmp_path / "clash")])
