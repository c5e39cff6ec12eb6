"""Runs the CLI in a subprocess, as a user would."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env(base=None, **extra):
  """The environment of a child Python that imports this checkout: `base` (default os.environ)
  plus `extra`, with the repository root put first on PYTHONPATH. The inherited PYTHONPATH is
  kept, not replaced: where the packages come from there (a --target install, as on the GPU
  machine's carried wheels), a child without it cannot import them."""
  env = dict(os.environ if base is None else base, **extra)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
  return env


def run_main(*args, timeout=300):
  """python -m cnf_jax.main ARGS from the repo root; returns the CompletedProcess."""
  env = subprocess_env()
  return subprocess.run([sys.executable, "-m", "cnf_jax.main", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def main_command(*args):
  return [sys.executable, "-m", "cnf_jax.main", *args]


def failure_report(proc) -> str:
  """What to show when a CLI run failed: its fatal-error lines first, then the end of stderr."""
  fatal = [l for l in proc.stderr.splitlines()
           if any(k in l for k in ("Fatal", "Error", "error:", "Check failed", "Traceback"))]
  return f"exit {proc.returncode}; " + "\n".join(fatal[:20]) + "\n...\n" + proc.stderr[-1500:]
