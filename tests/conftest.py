"""Test set-up: two virtual CPU devices, so the data-parallel path is exercised everywhere;
float32 matmuls at full float32 precision.

XLA reads the flag when the backend starts, so it must be set before any test
imports jax.
"""
import os
import sys

_FLAG = "--xla_force_host_platform_device_count=2"
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

# The tests check float32 exactness (inverses, log-dets against jax.jacobian, FrEIA parity).
# On a GPU, JAX's default precision lets float32 matmuls run in TF32 (10-bit mantissa), which
# breaks those tolerances; on a CPU this setting changes nothing. Subprocesses inherit it.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
