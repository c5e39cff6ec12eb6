"""The loop never lets the host queue many data-parallel steps ahead of the CPU devices.

Why (issue 17's SIGABRT): with several CPU devices (conftest gives every test and every CLI
subprocess two), the gradient all-reduce of a data-parallel step is an in-process rendezvous
between the devices' threads. When the host dispatches tens to hundreds of such programs
without waiting for them, a rendezvous waits for a participant that cannot run, and XLA ends
the process after about a minute with LOG(FATAL) "Termination timeout ... Exiting to ensure a consistent
program state": SIGABRT. The loop of 08944f6 dispatched one step per call and waited only
every log_every steps; with log_every = checkpoint_every = 1,500 it aborted in 2 of 2 runs
(benchmarks/results/soak/README.md). The loop now waits for each compiled chunk.
"""
import json
import subprocess

from cli_util import ROOT, failure_report, main_command, subprocess_env


def test_a_long_interval_between_waits_trains_on_two_cpu_devices(tmp_path):
  workdir = tmp_path / "run"
  # Two CPU devices also on a GPU machine, and data-parallel steps (the default, stated here
  # because without it the test proves nothing).
  env = subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  proc = subprocess.run(main_command("--config=configs/toy2d.py:runlocal", "--config.methods=flow",
                                     "--config.train.parallel=data", "--config.train.steps=1500",
                                     "--config.train.log_every=1500", "--config.train.checkpoint_every=1500",
                                     f"--workdir={workdir}"),
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, failure_report(proc)
  assert json.loads((workdir / "results.json").read_text())["auroc"]["flow"] > 0.9
