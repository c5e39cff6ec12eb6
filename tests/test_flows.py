"""Every block: inverse(forward(x)) == x and log|det J| == slogdet(jax.jacobian)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnf_jax.flows import AffineCouplingBlock, AllInOneBlock, Flow, SplineCouplingBlock, init_flow
from cnf_jax.flows import allinone
from flow_util import randomise

ALLINONE_VARIANTS = [
    dict(global_affine_type=g, permute_soft=soft, reverse_permutation=rev, clamp_activation=act)
    for g, soft, rev, act in itertools.product(("SOFTPLUS", "SIGMOID", "EXP"), (False, True), (False, True),
                                               ("tanh", "tanh_scaled"))
]


def _check_block(block, dim, rng_seed=0, atol=2e-4):
  rng = jax.random.key(rng_seed)
  x = jax.random.normal(jax.random.fold_in(rng, 1), (7, dim))
  variables = randomise(block.init(rng, x), jax.random.fold_in(rng, 2))
  y, log_det = block.apply(variables, x, method=block.forward)
  x_back, log_det_inv = block.apply(variables, y, method=block.inverse)
  assert not np.allclose(y, x, atol=1e-3), "the block should not be the identity here"
  np.testing.assert_allclose(x_back, x, atol=atol, rtol=1e-4)
  np.testing.assert_allclose(log_det_inv, -log_det, atol=atol, rtol=1e-4)

  single = lambda v: block.apply(variables, v[None], method=block.forward)[0][0]
  jacobians = jax.jit(jax.vmap(jax.jacobian(single)))(x)   # [B, D, D]
  sign, logabs = jnp.linalg.slogdet(jacobians)
  assert np.all(sign != 0)
  np.testing.assert_allclose(log_det, logabs, atol=atol, rtol=1e-4)


@pytest.mark.parametrize("kwargs", ALLINONE_VARIANTS,
                         ids=lambda k: "-".join(f"{v}" for v in k.values()))
def test_allinone_block_inverse_and_log_det(kwargs):
  _check_block(AllInOneBlock(dim=5, hidden=(16,), **kwargs), dim=5)


@pytest.mark.parametrize("dim", [2, 5])
def test_affine_coupling_block_inverse_and_log_det(dim):
  _check_block(AffineCouplingBlock(dim=dim, hidden=(16, 16)), dim=dim)


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_spline_coupling_block_inverse_and_log_det(dim):
  _check_block(SplineCouplingBlock(dim=dim, hidden=(16,), num_bins=6, bound=3.0), dim=dim, atol=5e-4)


@pytest.mark.parametrize("block,dim", [("allinone", 4), ("affine", 3), ("spline", 1)])
def test_flow_log_prob_is_change_of_variables(block, dim):
  model = Flow(dim=dim, block=block, num_blocks=3, hidden=(16,), permute_soft=True)
  variables = randomise(init_flow(model, jax.random.key(3)), jax.random.key(4), 0.3)
  x = jax.random.normal(jax.random.key(5), (6, dim))
  z, log_det = model.apply(variables, x, method=Flow.forward)
  expected = -0.5 * jnp.sum(z**2, -1) - 0.5 * dim * np.log(2 * np.pi) + log_det
  np.testing.assert_allclose(model.apply(variables, x, method=Flow.log_prob), expected, rtol=1e-6)
  x_back, _ = model.apply(variables, z, method=Flow.inverse)
  np.testing.assert_allclose(x_back, x, atol=1e-4)
  samples = model.apply(variables, jax.random.key(6), 11, method=Flow.sample)
  assert samples.shape == (11, dim) and np.all(np.isfinite(samples))


def test_global_scale_init_inverts_activation():
  for kind, init in itertools.product(allinone.GLOBAL_AFFINE_TYPES, (0.3, 1.0, 2.5)):
    g = allinone.global_scale_init(init, kind)
    assert abs(float(allinone.global_scale_activation(jnp.float32(g), kind)) - init) < 1e-5


def test_softplus_is_linear_past_torch_threshold():
  g = jnp.array([50.0, 41.0])  # beta * g > 20: torch returns g itself.
  np.testing.assert_allclose(allinone.global_scale_activation(g, "SOFTPLUS"), 0.1 * g, rtol=1e-6)


def test_rotation_is_special_orthogonal():
  from cnf_jax.flows import permutation
  w = permutation.random_rotation_matrix(jax.random.key(0), 6)
  np.testing.assert_allclose(w @ w.T, np.eye(6), atol=1e-5)
  assert float(jnp.linalg.det(w)) == pytest.approx(1.0, abs=1e-4)
  p = permutation.random_permutation_matrix(jax.random.key(1), 6)
  np.testing.assert_array_equal(p.sum(0), 1)
  np.testing.assert_array_equal(p.sum(1), 1)


def test_one_dimensional_coupling_blocks_are_refused():
  with pytest.raises(ValueError, match="spline"):
    AllInOneBlock(dim=1).init(jax.random.key(0), jnp.zeros((1, 1)))


def test_bfloat16_conditioner_keeps_the_flow_invertible_and_close_to_float32():
  kwargs = dict(dim=16, block="allinone", num_blocks=3, hidden=(32, 32), permute_soft=True)
  f32, bf16 = Flow(**kwargs), Flow(compute_dtype="bfloat16", **kwargs)
  variables = randomise(init_flow(f32, jax.random.key(0)), jax.random.key(1), 0.3)
  x = jax.random.normal(jax.random.key(2), (8, 16))
  z, log_det = bf16.apply(variables, x, method=Flow.forward)
  assert z.dtype == jnp.float32 and log_det.dtype == jnp.float32
  x_back, _ = bf16.apply(variables, z, method=Flow.inverse)
  np.testing.assert_allclose(x_back, x, atol=2e-4)   # the inverse recomputes the same bf16 coefficients
  lp32 = f32.apply(variables, x, method=Flow.log_prob)
  lp16 = bf16.apply(variables, x, method=Flow.log_prob)
  assert not np.array_equal(lp32, lp16)              # bf16 was really used
  np.testing.assert_allclose(lp16, lp32, rtol=2e-2, atol=0.5)


def test_auto_compute_dtype_is_bfloat16_on_a_cpu_with_amx_and_float32_elsewhere(monkeypatch, tmp_path):
  from cnf_jax.experiments import config_lib
  from cnf_jax.flows import flow as flow_lib
  config = config_lib.default_config()
  assert config.flow.compute_dtype == "auto"
  config_lib.validate(config)   # 'auto' is a valid setting
  assert jax.default_backend() == "cpu"   # conftest: the tests run on the CPU

  from cnf_jax import cpu_features
  read_cpuinfo = cpu_features.cpu_flags

  def on_cpu_with(flags_line):
    """The dtype 'auto' resolves to on a CPU whose /proc/cpuinfo has this flags line."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: a CPU\n{flags_line}\n")
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda: read_cpuinfo(str(cpuinfo)))
    flow_lib.cpu_has_bf16_matrix_unit.cache_clear()
    return flow_lib.flow_from_config(config.flow, 8).compute_dtype

  assert on_cpu_with("flags\t\t: fpu sse avx512f avx512_bf16 amx_bf16 amx_tile") == "bfloat16"
  assert on_cpu_with("flags\t\t: fpu sse avx512f") == "float32"        # no AMX: XLA upcasts, slower
  assert on_cpu_with("flags\t\t: fpu avx512f avx512_bf16") == "float32"  # AVX512-BF16 alone: not measured
  assert on_cpu_with("") == "float32"                                   # no flags line (not Linux)
  on_cpu_with("flags\t\t: amx_bf16")
  monkeypatch.setattr(flow_lib.jax, "default_backend", lambda: "gpu")
  assert flow_lib.flow_from_config(config.flow, 8).compute_dtype == "float32"
  config.flow.compute_dtype = "bfloat16"   # an explicit choice is kept, everywhere
  assert flow_lib.flow_from_config(config.flow, 8).compute_dtype == "bfloat16"
  config.flow.compute_dtype = "float32"
  monkeypatch.setattr(flow_lib.jax, "default_backend", lambda: "cpu")
  assert flow_lib.flow_from_config(config.flow, 8).compute_dtype == "float32"
  monkeypatch.undo()
  flow_lib.cpu_has_bf16_matrix_unit.cache_clear()


def test_cpu_flags_reads_the_first_flags_line_of_cpuinfo(tmp_path):
  from cnf_jax.cpu_features import cpu_flags
  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
  assert cpu_flags(str(cpuinfo)) == {"fpu", "avx512f", "amx_bf16"}
  arm = tmp_path / "arm"
  arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")   # aarch64 spells it Features
  assert cpu_flags(str(arm)) == {"fp", "asimd", "bf16"}
  assert cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_bfloat16_dense_gradients_match_float32_within_bfloat16_rounding():
  from cnf_jax.flows.conditioner import bf16_dense
  k = jax.random.split(jax.random.key(3), 3)
  x, w = jax.random.normal(k[0], (48, 24)), jax.random.normal(k[1], (24, 40)) / 5
  b = jax.random.normal(k[2], (40,))

  def loss(dense):
    return lambda x, w, b: jnp.sum(jnp.sin(dense(x, w, b)))

  exact = jax.grad(loss(lambda x, w, b: x @ w + b), argnums=(0, 1, 2))(x, w, b)
  mixed = jax.grad(loss(bf16_dense), argnums=(0, 1, 2))(x, w, b)
  for g16, g32 in zip(mixed, exact):
    assert g16.dtype == jnp.float32 and g16.shape == g32.shape
    scale = float(jnp.abs(g32).max())
    assert 0 < float(jnp.abs(g16 - g32).max()) < 2e-2 * scale   # bf16 was used, and only rounding differs
  # Under vmap (the sweeps' model axis) the custom backward gives each model its own gradients.
  xs, ws, bs = jnp.stack([x, 2 * x]), jnp.stack([w, -w]), jnp.stack([b, b])
  batched = jax.vmap(jax.grad(loss(bf16_dense), argnums=1))(xs, ws, bs)
  np.testing.assert_allclose(batched[0], mixed[1], rtol=1e-5, atol=1e-5)
  single = jax.grad(loss(bf16_dense), argnums=1)(2 * x, -w, b)
  np.testing.assert_allclose(batched[1], single, rtol=1e-5, atol=1e-5)


def test_row_major_transpose_is_the_transpose():
  from cnf_jax.flows.conditioner import row_major_transpose
  a = jnp.arange(12.0).reshape(3, 4).astype(jnp.bfloat16)
  np.testing.assert_array_equal(jax.jit(row_major_transpose)(a), a.T)
