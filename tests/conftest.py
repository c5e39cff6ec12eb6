"""Test set-up: two virtual CPU devices, so the data-parallel path is exercised everywhere.

XLA reads the flag when the backend starts, so it must be set before any test
imports jax.
"""
import os
import sys

_FLAG = "--xla_force_host_platform_device_count=2"
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
