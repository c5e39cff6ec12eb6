"""cnf_jax.host_memory: the glibc allocator setting for compiled CPU steps.

Each check runs in a subprocess, so the setting does not leak into the test process.
"""
import os
import platform
import subprocess
import sys

import pytest

from cli_util import ROOT, run_main, subprocess_env

_PROGRAM = """
import sys
import jax.numpy as jnp
from cnf_jax.training import host_memory
mode = host_memory.configure() if sys.argv[1] == "cli" else host_memory.configure(default=sys.argv[1])
x = jnp.ones((1024, 1024))                    # large allocations after the setting
print(mode, float((x @ x)[0, 0]))
"""
GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _run(default, **env):
  inherited = {k: v for k, v in os.environ.items() if k != "CNF_JAX_HOST_MALLOC"}
  env = subprocess_env(inherited, **env)
  proc = subprocess.run([sys.executable, "-c", _PROGRAM, default], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-1500:]
  return proc.stdout.split()


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_keep_applies_on_glibc_and_computation_still_works():
  assert _run("keep") == ["kept", "1024.0"]
  assert _run("default", CNF_JAX_HOST_MALLOC="keep") == ["kept", "1024.0"]   # the variable wins


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_the_command_line_tools_keep_freed_memory_unless_told_not_to():
  assert _run("cli") == ["kept", "1024.0"]
  assert _run("cli", CNF_JAX_HOST_MALLOC="default") == ["default", "1024.0"]


def test_default_leaves_the_allocator_alone():
  assert _run("default") == ["default", "1024.0"]
  assert _run("keep", CNF_JAX_HOST_MALLOC="default") == ["default", "1024.0"]


def test_a_bad_value_is_a_clear_cli_error(tmp_path, monkeypatch):
  monkeypatch.setenv("CNF_JAX_HOST_MALLOC", "always")
  proc = run_main("--config=configs/toy2d.py:runlocal", f"--workdir={tmp_path / 'run'}")
  assert proc.returncode == 2
  assert "CNF_JAX_HOST_MALLOC='always' is not one of keep, default" in proc.stderr
  assert not (tmp_path / "run").exists()
