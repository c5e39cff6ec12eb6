"""cnf_jax.host_memory: the glibc allocator setting for compiled CPU steps."""
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from cnf_jax import host_memory


def _is_glibc():
  import platform
  return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not _is_glibc(), reason="mallopt is glibc's")
def test_applies_on_glibc_and_computation_still_works():
  assert host_memory.keep_freed_host_memory() is True
  x = jnp.ones((1024, 1024))          # a large allocation after the setting
  np.testing.assert_allclose(float((x @ x)[0, 0]), 1024.0)


def test_opt_out_keeps_the_defaults(monkeypatch):
  monkeypatch.setenv(host_memory.OPT_OUT_ENV, "1")
  assert host_memory.keep_freed_host_memory() is False
