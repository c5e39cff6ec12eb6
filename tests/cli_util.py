"""Runs the CLI in a subprocess, as a user would."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args, timeout=300):
  """python -m cnf_jax.main ARGS from the repo root; returns the CompletedProcess."""
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return subprocess.run([sys.executable, "-m", "cnf_jax.main", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def main_command(*args):
  return [sys.executable, "-m", "cnf_jax.main", *args]


def failure_report(proc) -> str:
  """What to show when a CLI run failed: its fatal-error lines first, then the end of stderr."""
  fatal = [l for l in proc.stderr.splitlines()
           if any(k in l for k in ("Fatal", "Error", "error:", "Check failed", "Traceback"))]
  return f"exit {proc.returncode}; " + "\n".join(fatal[:20]) + "\n...\n" + proc.stderr[-1500:]
