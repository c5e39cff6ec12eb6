"""benjamini_hochberg: hand-worked cases, the brute-force definition, and its FDR on simulated p-values."""
import numpy as np
import pytest

from cnf_jax.evaluation.conformal import benjamini_hochberg


def _brute_force(p, q):
  """The definition, one k at a time: reject the k* smallest, k* = max{k : p_(k) <= k q / m}."""
  ranked, m = np.sort(p), len(p)
  k_star = max([k for k in range(1, m + 1) if ranked[k - 1] <= k * q / m], default=0)
  return p <= ranked[k_star - 1] if k_star else np.zeros(m, bool)


def test_hand_worked_example():
  # Sorted: 0.01 <= 0.02, 0.03 <= 0.04, 0.04 <= 0.06, 0.2 > 0.08, 0.5 > 0.1: the three smallest.
  mask = benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.5, 0.2]), 0.1)
  assert mask.dtype == bool and mask.shape == (5,)
  np.testing.assert_array_equal(mask, [True, True, True, False, False])


def test_step_up_rejects_below_a_later_passing_rank():
  # 0.03 misses its own line (1 x 0.05 / 2 = 0.025) but 0.035 meets 2 x 0.05 / 2: both are rejected.
  np.testing.assert_array_equal(benjamini_hochberg(np.array([0.035, 0.03]), 0.05), [True, True])


def test_ties_nothing_and_empty():
  np.testing.assert_array_equal(benjamini_hochberg(np.array([0.02, 0.02, 0.02, 0.9]), 0.1),
                                [True, True, True, False])
  assert not benjamini_hochberg(np.full(10, 0.9), 0.1).any()
  assert benjamini_hochberg(np.zeros(0), 0.1).shape == (0,)


def test_matches_the_definition_on_random_p_values():
  rng = np.random.default_rng(0)
  for trial in range(200):
    m = int(rng.integers(1, 40))
    # A mix of small and uniform p-values, on a grid so that ties occur.
    p = np.round(np.where(rng.random(m) < 0.3, rng.random(m) * 0.02, rng.random(m)), 3)
    q = float(rng.choice([0.05, 0.1, 0.2]))
    np.testing.assert_array_equal(benjamini_hochberg(p, q), _brute_force(p, q), err_msg=f"{p} q={q}")


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5, True, "0.1", None])
def test_bad_level(bad):
  with pytest.raises(ValueError, match="q must be a number in"):
    benjamini_hochberg(np.array([0.1, 0.2]), bad)


def test_bad_p_values():
  with pytest.raises(ValueError, match="must be 1-D"):
    benjamini_hochberg(np.zeros((2, 2)), 0.1)
  with pytest.raises(ValueError, match="NaN"):
    benjamini_hochberg(np.array([0.1, np.nan]), 0.1)


def test_false_discovery_rate_with_independent_p_values():
  """Independent uniform nulls: E[FDP] = q m0 / m exactly (Benjamini & Hochberg 1995), and under the
  global null (m0 = m) that is P(any rejection) = q."""
  rng = np.random.default_rng(1)
  draws, m, m0, q = 4000, 100, 80, 0.1
  fdp, any_rejection = np.zeros(draws), np.zeros(draws)
  for i in range(draws):
    nulls = rng.random(m0)
    alternatives = rng.beta(0.05, 1, size=m - m0)        # mostly tiny p-values
    rejected = benjamini_hochberg(np.concatenate([nulls, alternatives]), q)
    fdp[i] = rejected[:m0].sum() / max(rejected.sum(), 1)
    any_rejection[i] = benjamini_hochberg(rng.random(m), q).any()
  # 4 standard errors of the mean over the draws.
  assert abs(fdp.mean() - q * m0 / m) < 4 * fdp.std() / np.sqrt(draws)
  assert abs(any_rejection.mean() - q) < 4 * np.sqrt(q * (1 - q) / draws)
