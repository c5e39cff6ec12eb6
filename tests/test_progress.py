"""Progress bars (TTY and log lines), quiet mode, and the TensorBoard event files of a run."""
import glob
import io
import os

import numpy as np
import pytest

from cnf_jax.data import tfrecord
from cnf_jax.training import progress
from cnf_jax.training.summaries import MetricsWriter


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_log_lines_off_a_terminal_are_throttled_and_end_with_the_total():
  out = io.StringIO()
  bar = progress.Progress(300, "cf", start=100, stream=out, interval_s=3600)
  bar.update(150, loss=1.5)      # the first update shows
  bar.update(200, loss=1.25)     # within the interval: nothing
  bar.update(300, loss=1.0)      # the end always shows
  lines = out.getvalue().splitlines()
  assert len(lines) == 2, lines
  assert lines[0].startswith("cf  150/300 steps") and "ETA " in lines[0] and "loss=1.5" in lines[0]
  assert "300/300 steps" in lines[1] and "took " in lines[1] and "steps/s" in lines[1]


def test_a_terminal_gets_one_redrawn_bar():
  out = _Terminal()
  bar = progress.Progress(10, "flow", stream=out, interval_s=0)
  for done in range(1, 11):
    bar.update(done)
  text = out.getvalue()
  assert text.count("\r") == 10 and text.endswith("\n") and text.count("\n") == 1
  assert "[####################]" in text and "10/10 steps" in text


def test_quiet_silences_every_bar():
  out = io.StringIO()
  progress.set_quiet(True)
  try:
    progress.Progress(5, "cf", stream=out, interval_s=0).update(5)
  finally:
    progress.set_quiet(False)
  assert out.getvalue() == ""


@pytest.mark.parametrize("seconds, text", [(7, "0:07"), (750, "12:30"), (3723, "1:02:03")])
def test_format_seconds(seconds, text):
  assert progress.format_seconds(seconds) == text


def _scalars(logdir):
  """{tag: [(step, value)]} read back from the event files under `logdir` (TFRecord-framed protos)."""
  from tensorboardX.proto import event_pb2
  out = {}
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      for record in tfrecord.decode_records(f.read()):
        event = event_pb2.Event.FromString(record)
        for value in event.summary.value:
          out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out


def test_metrics_go_to_jsonl_and_tensorboard_and_a_resume_drops_the_interrupted_steps(tmp_path):
  writer = MetricsWriter(str(tmp_path / "metrics.jsonl"))
  for step in (10, 20, 30):
    writer.write({"model": "cf", "step": step, "loss": float(step), "lr": 0.1})
  writer.close()
  # A resume from the checkpoint at step 20: step 30 is trained again.
  writer = MetricsWriter(str(tmp_path / "metrics.jsonl"))
  writer.drop_after("cf", 20)
  writer.write({"model": "cf", "step": 30, "loss": 3.5, "lr": 0.1})
  writer.close()
  lines = [l for l in open(tmp_path / "metrics.jsonl").read().splitlines() if l]
  assert [eval(l)["step"] for l in lines] == [10, 20, 30] and eval(lines[-1])["loss"] == 3.5
  scalars = _scalars(str(tmp_path / "tensorboard" / "cf"))
  assert set(scalars) == {"loss", "lr"}
  # The event files hold both attempts; the purge event of the second tells TensorBoard to hide
  # the first attempt's steps >= 21, so what it shows for step 30 is the resumed value.
  assert scalars["loss"][-1] == (30, 3.5)
  np.testing.assert_allclose([v for s, v in scalars["loss"] if s <= 20], [10.0, 20.0])


def test_a_cli_run_writes_event_files_for_every_model_and_its_hparams(tmp_path):
  import sys
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
  import toy2d as toy2d_config
  from cnf_jax.experiments import experiment
  config = toy2d_config.get_config("runlocal")
  config.methods = "cf,flow"
  experiment.train_and_evaluate(config, str(tmp_path))
  for model in ("cf", "flow"):
    scalars = _scalars(str(tmp_path / "tensorboard" / model))
    assert {"loss", "lr", "grad_norm", "nll_inlier"} <= set(scalars)
    assert [s for s, _ in scalars["loss"]] == list(range(10, config.train.steps + 1, 10))
  assert glob.glob(str(tmp_path / "tensorboard" / "hparams" / "**" / "events.out.tfevents.*"), recursive=True)


def test_baseline_scoring_shows_one_progress_line_per_run_of_baselines(capsys):
  # Not a TTY (pytest's capture): the line shows at the end, with what it took.
  from cnf_jax.evaluation import baselines
  rng = np.random.default_rng(0)
  inliers, test = rng.normal(size=(60, 3)), rng.normal(size=(20, 3))
  scores, _ = baselines.score_sets(["knn", "kde"], inliers, None, {"test": test})
  err = capsys.readouterr().err
  assert "baselines  2/2 methods" in err and "took" in err and "last=kde" in err, err
  assert set(scores["test"]) == {"knn", "kde"} and scores["test"]["knn"].shape == (20,)
  baselines.score_sets(["knn"], inliers, None, {"test": test}, progress=False)
  assert "baselines" not in capsys.readouterr().err
