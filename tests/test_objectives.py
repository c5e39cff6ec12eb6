"""The contrastive loss against eq. 3 with the clamp, by hand; auto eps; preprocessing."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnf_jax.training import objectives
from cnf_jax.data import preprocessing
from cnf_jax.errors import UserInputError


def test_contrastive_loss_matches_hand_computed_values():
  log_p_in = jnp.array([-1.0, -3.0])          # NLL mean = 2.0
  log_p_con = jnp.array([0.5, -2.0, -0.25])   # clamped at eps = -0.5: [0.5, -0.5, -0.25] -> mean -0.25/3
  loss = objectives.contrastive_loss(log_p_in, log_p_con, eps=-0.5)
  assert float(loss) == pytest.approx(2.0 + (0.5 - 0.5 - 0.25) / 3, abs=1e-6)
  # eps = 0 (the paper's setting): only the first contrastive sample counts.
  assert float(objectives.contrastive_loss(log_p_in, log_p_con, 0.0)) == pytest.approx(2.0 + 0.5 / 3)
  assert float(objectives.nll(log_p_in)) == pytest.approx(2.0)


def test_clamped_term_has_no_gradient_below_eps():
  grad = jax.grad(lambda lp: objectives.clamped_contrastive_term(lp, -1.0))(jnp.array([-3.0, -1.5, 0.0, 2.0]))
  np.testing.assert_allclose(grad, [0.0, 0.0, 0.25, 0.25])
  # The inlier term always pulls log p up, whatever eps.
  grad_in = jax.grad(lambda lp: objectives.contrastive_loss(lp, jnp.array([-5.0]), 0.0))(jnp.array([-9.0, 9.0]))
  np.testing.assert_allclose(grad_in, [-0.5, -0.5])


def test_contrastive_loss_is_flat_below_eps_and_linear_above():
  """Eq. 3's clamp as a function of one contrastive log-density y (two more fixed at 1 and -9)."""
  loss = lambda y: objectives.contrastive_loss(jnp.array([-2.0]), jnp.array([y, 1.0, -9.0]), eps=-1.0)
  # = 2 + (max(y, -1) + 1 + max(-9, -1)) / 3 = 2 + max(y, -1) / 3.
  # Below eps the point contributes eps, however far down the flow pushes it: the loss is bounded.
  for y in (-1.0, -3.0, -1e4):
    assert float(loss(y)) == pytest.approx(2.0 - 1.0 / 3)
  # Above eps it contributes itself, slope 1/M (M = 3 contrastive points).
  assert float(loss(2.0)) == pytest.approx(2.0 + 2.0 / 3)
  np.testing.assert_allclose([jax.grad(loss)(y) for y in (-3.0, -1e4, 0.0, 5.0)], [0.0, 0.0, 1 / 3, 1 / 3])


def test_auto_eps_is_quantile_plus_offset():
  log_p = np.arange(100, dtype=np.float64)   # 10% quantile = 9.9
  assert objectives.auto_eps(log_p) == pytest.approx(9.9 + math.log(10))
  assert objectives.auto_eps(log_p, quantile=0.5, offset=-1.0) == pytest.approx(48.5)
  with pytest.raises(UserInputError):
    objectives.auto_eps(np.array([]))
  with pytest.raises(UserInputError, match="non-finite"):
    objectives.auto_eps(np.array([1.0, np.nan]))


def test_sphere_projection_and_noise():
  x = np.array([[3.0, 4.0], [0.0, -2.0]])
  y = preprocessing.apply(x, "sphere", preprocessing.fit(x, "sphere"))
  np.testing.assert_allclose(y, [[0.6, 0.8], [0.0, -1.0]], rtol=1e-6)
  with pytest.raises(UserInputError, match="all-zero"):
    preprocessing.apply(np.zeros((2, 2)), "sphere", {})
  noisy = preprocessing.add_noise(jax.random.key(0), jnp.zeros((20000, 2)), 0.02)
  assert float(jnp.std(noisy)) == pytest.approx(0.02, rel=0.03)
  # The noise is added to x: the same key on shifted inputs gives the same noise, shifted.
  shifted = preprocessing.add_noise(jax.random.key(0), jnp.full((20000, 2), 5.0), 0.02)
  np.testing.assert_allclose(shifted - 5.0, noisy, atol=1e-5)
  # std 0 (the toy configs) leaves the batch exactly as it was.
  x = jnp.arange(6.0).reshape(3, 2)
  np.testing.assert_array_equal(preprocessing.add_noise(jax.random.key(0), x, 0.0), x)


def test_standardize_uses_training_statistics_and_survives_constant_columns():
  train = np.array([[1.0, 5.0], [3.0, 5.0]])
  stats = preprocessing.fit(train, "standardize")
  out = preprocessing.apply(np.array([[2.0, 5.0], [5.0, 6.0]]), "standardize", stats)
  np.testing.assert_allclose(out, [[0.0, 0.0], [3.0, 1.0]])


def test_oe_loss_matches_hand_computed_values():
  log_p_in = jnp.array([-1.0, -3.0, 2.0])     # NLL mean = 2/3
  log_p_out = jnp.array([-4.0, -2.0, 0.5])
  # margin 1: relu(1 + [-4 - -1, -2 - -3, 0.5 - 2]) = relu([-2, 2, -0.5]) = [0, 2, 0] -> mean 2/3
  assert float(objectives.oe_margin_term(log_p_in, log_p_out, 1.0)) == pytest.approx(2.0 / 3)
  assert float(objectives.oe_loss(log_p_in, log_p_out, 1.0, 0.5)) == pytest.approx(2.0 / 3 + 0.5 * 2.0 / 3)
  # margin 0 and weight 0: plain maximum likelihood.
  assert float(objectives.oe_loss(log_p_in, log_p_out, 3.0, 0.0)) == pytest.approx(float(objectives.nll(log_p_in)))
  # Unequal batches: the first min(B, B') are paired; the NLL still uses every inlier.
  short = objectives.oe_loss(log_p_in, log_p_out[:2], 1.0, 1.0)
  assert float(short) == pytest.approx(2.0 / 3 + (0 + 2) / 2)


def test_oe_gradient_acts_only_on_violating_pairs():
  grad_out = jax.grad(lambda lo: objectives.oe_margin_term(jnp.array([0.0, 0.0]), lo, 1.0))(jnp.array([-5.0, 0.0]))
  np.testing.assert_allclose(grad_out, [0.0, 0.5])   # the first pair already keeps its margin.
