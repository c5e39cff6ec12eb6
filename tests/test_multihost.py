"""Two processes with jax.distributed (CPU collectives) train the same run as one process."""
import json
import os
import socket
import subprocess
import sys

import numpy as np

from cli_util import ROOT, subprocess_env


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _npz(path):
  rng = np.random.default_rng(0)
  np.savez(path, inliers=rng.normal(size=(300, 4)) + 1.0, contrastive=rng.normal(size=(300, 4)) * 2,
           test=np.concatenate([rng.normal(size=(100, 4)) + 1.0, rng.normal(size=(100, 4)) * 2]),
           test_is_anomaly=np.repeat([0, 1], 100))
  return str(path)


def _args(data, workdir):
  return ["-m", "cnf_jax.main", "--config=configs/npz.py:runlocal", f"--config.data.path={data}",
          "--config.methods=cf,flow", "--config.preprocess.normalize=standardize", f"--workdir={workdir}"]


def _env(devices):
  # The CPU backend also on a GPU machine: the test is about CPU collectives between processes.
  return subprocess_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")


def test_two_processes_agree_with_one(tmp_path):
  data = _npz(tmp_path / "d.npz")
  # One process with two devices: the reference (the same global batch over the same 2-device mesh size).
  single = subprocess.run([sys.executable, *_args(data, tmp_path / "one")], cwd=ROOT, env=_env(2),
                          capture_output=True, text=True, timeout=300)
  assert single.returncode == 0, single.stderr[-2000:]

  port = _free_port()
  procs = [subprocess.Popen([sys.executable, *_args(data, tmp_path / "two"), f"--coordinator_address=127.0.0.1:{port}",
                             "--num_processes=2", f"--process_id={i}"], cwd=ROOT, env=_env(1),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  # Really one run over two processes, not two independent runs.
  assert all(f"process {i} of 2, 1 of 2 devices here" in err for i, (_, err) in enumerate(outs))

  one = json.loads((tmp_path / "one" / "results.json").read_text())
  two = json.loads((tmp_path / "two" / "results.json").read_text())
  for method in ("cf", "flow"):
    assert abs(one["auroc"][method] - two["auroc"][method]) < 1e-3
  a, b = np.load(tmp_path / "one" / "scores.npz"), np.load(tmp_path / "two" / "scores.npz")
  np.testing.assert_allclose(b["score_cf"], a["score_cf"], rtol=1e-4, atol=1e-4)
  # Metrics were written once (by process 0), not once per process.
  lines = [json.loads(l) for l in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
  assert len(lines) == len({(l["model"], l["step"]) for l in lines}) == 8
  # Both processes printed the same AUROCs.
  summaries = [json.loads(out.strip().splitlines()[-1])["auroc"] for out, _ in outs]
  assert summaries[0] == summaries[1] == two["auroc"]


def test_batch_not_divisible_by_the_global_device_count(tmp_path):
  data = _npz(tmp_path / "d.npz")
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, *_args(data, tmp_path / "w"), "--config.train.batch_size=33",
                             f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
                            cwd=ROOT, env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 2, err[-2000:]
    assert "error: inlier batch size 33 is not divisible by the 2 devices" in err
