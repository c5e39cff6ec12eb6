"""ContrastiveFlowDetector on made-up data with known answers; scikit-learn checks; conformal coverage."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.utils.estimator_checks import parametrize_with_checks

import cnf_jax
from cnf_jax.training.contrastive import permute_columns
from cnf_jax.detector import ContrastiveFlowDetector, conformal_pvalues
from cnf_jax.errors import UserInputError

# Small and fast: tests need the behaviour, not the paper's capacity.
SMALL = dict(num_blocks=4, hidden=(32, 32), steps=300, batch_size=128, lr=3e-3)


def _tiny():
  return ContrastiveFlowDetector(steps=5, hidden=(8,), num_blocks=2, batch_size=16)


# PyOD's conventions, asked for by the issue, contradict two scikit-learn outlier checks:
# predict returns 0/1 (1 = anomaly) where they require -1/+1, and decision_function is
# higher for anomalies where they require it to be negative for outliers.
PYOD_CONVENTION = "PyOD convention: predict gives 0/1 and decision_function is higher for anomalies"


@parametrize_with_checks([_tiny()], expected_failed_checks=lambda est: {
    "check_outliers_train": PYOD_CONVENTION, "check_outliers_fit_predict": PYOD_CONVENTION})
def test_scikit_learn_checks(estimator, check):
  check(estimator)


def test_exported_lazily_from_the_package():
  assert cnf_jax.ContrastiveFlowDetector is ContrastiveFlowDetector


def test_permute_columns_permutes_each_column_independently():
  import jax
  x = np.arange(64 * 3, dtype=np.float32).reshape(64, 3)
  y = np.asarray(permute_columns(jax.random.key(0), x))
  for j in range(3):
    assert sorted(y[:, j]) == sorted(x[:, j])          # same marginal, exactly
  rows = (y - y[:, :1]) // 1
  assert not np.all(rows == (x - x[:, :1])), "columns were shuffled together, not independently"
  assert not np.array_equal(y, x)
  np.testing.assert_array_equal(y, np.asarray(permute_columns(jax.random.key(0), x)))
  assert not np.array_equal(y, np.asarray(permute_columns(jax.random.key(1), x)))


def _auroc(det, inliers, outliers):
  scores = det.decision_function(np.concatenate([inliers, outliers]))
  return roc_auc_score(np.r_[np.zeros(len(inliers)), np.ones(len(outliers))], scores)


@pytest.mark.parametrize("method", ["cf", "flow"])
def test_gaussian_blob_and_far_outliers(method):
  rng = np.random.default_rng(0)
  inliers = rng.normal(size=(1900, 4))
  far = rng.normal(size=(100, 4)) + 8.0           # 8 standard deviations away
  X = rng.permutation(np.concatenate([inliers, far]))
  det = ContrastiveFlowDetector(method=method, contamination=0.05, **SMALL).fit(X)

  test_in, test_far = rng.normal(size=(500, 4)), rng.normal(size=(50, 4)) + 8.0
  assert _auroc(det, test_in, test_far) > 0.99
  is_far = np.linalg.norm(X, axis=1) > 5
  # threshold_ at the 95% quantile of the training scores: the 5% flagged are the far points.
  assert det.labels_.sum() == pytest.approx(100, abs=2)
  assert (det.labels_.astype(bool) == is_far).mean() > 0.99
  assert det.predict(test_far).mean() > 0.95 and det.predict(test_in).mean() < 0.1
  np.testing.assert_array_equal(det.score_samples(test_in), -det.decision_function(test_in))


def test_permute_recipe_finds_outliers_that_marginals_cannot():
  """Inliers: 4 columns, pairwise correlation 0.9. Outliers: the same marginals, independent columns."""
  rng = np.random.default_rng(1)
  cov = np.full((4, 4), 0.9) + 0.1 * np.eye(4)
  draw = lambda n: rng.multivariate_normal(np.zeros(4), cov, size=n)
  x_train, test_in = draw(3000), draw(500)
  # Each column shuffled on its own: every marginal is exactly N(0, 1), the correlation is gone.
  test_out = np.stack([rng.permutation(c) for c in draw(500).T], axis=1)

  labels, test = np.r_[np.zeros(500), np.ones(500)], np.concatenate([test_in, test_out])
  z = (test - x_train.mean(0)) / x_train.std(0)
  # Any one column is at chance: its distribution is the same for inliers and outliers.
  for j in range(4):
    assert 0.43 < roc_auc_score(labels, np.abs(z[:, j])) < 0.57
  # The product of the marginal densities (the independence model) does little better.
  assert roc_auc_score(labels, np.sum(z ** 2, axis=1)) < 0.7

  # The default noise (0.6 standard deviations, chosen on ADBench) is wider than the
  # structure here (conditional std sqrt(0.1) = 0.32) and blurs it (AUROC 0.84); the recipe
  # itself is what this test is about, so it trains with the paper's small noise.
  fine = dict(SMALL, noise_std=0.02)
  det = ContrastiveFlowDetector(method="cf", **fine).fit(x_train)   # permute is the default
  assert _auroc(det, test_in, test_out) > 0.9
  det_explicit = ContrastiveFlowDetector(method="cf", **fine).fit(x_train, contrastive="permute")
  np.testing.assert_array_equal(det_explicit.decision_scores_, det.decision_scores_)


def test_given_contrastive_array_and_flow_ratio():
  rng = np.random.default_rng(2)
  x_train = rng.normal(size=(2000, 3)) * 0.5
  contrastive = rng.uniform(-4, 4, size=(2000, 3))   # a broad box around the inliers
  test_in, test_out = rng.normal(size=(300, 3)) * 0.5, rng.uniform(2, 4, size=(300, 3))
  for method in ("cf", "flow_ratio"):
    det = ContrastiveFlowDetector(method=method, eps=-2.0, **SMALL).fit(x_train, contrastive=contrastive)
    assert _auroc(det, test_in, test_out) > 0.95, method
  assert det.eps_ is None and set(det.variables_) == {"flow", "contrastive_flow"}


def test_conformal_false_alarm_rate_over_1000_calibration_draws():
  """P(p <= alpha) over fresh (calibration set, inlier) draws is floor(alpha (n+1)) / (n+1) <= alpha."""
  rng = np.random.default_rng(3)
  det = ContrastiveFlowDetector(method="flow", **SMALL).fit(rng.normal(size=(1000, 2)))
  draws, n_cal, alpha = 1000, 199, 0.1
  fresh = rng.normal(size=(draws * (n_cal + 1), 2))
  scores = det.decision_function(fresh).reshape(draws, n_cal + 1)
  p = np.array([conformal_pvalues(s[1:], s[:1])[0] for s in scores])
  expected = np.floor(alpha * (n_cal + 1)) / (n_cal + 1)      # = 0.1 exactly
  binomial_sd = np.sqrt(expected * (1 - expected) / draws)     # ~0.0095
  assert abs(np.mean(p <= alpha) - expected) < 3 * binomial_sd
  # p-values of exchangeable points are uniform on {1/(n+1), ..., 1}: mean (n+2) / (2(n+1)) ~ 0.5.
  assert abs(p.mean() - 0.5) < 4 * np.sqrt(1 / 12 / draws)

  # The public API computes the same p-values and flags by them.
  cal, x = fresh[:n_cal], fresh[n_cal:n_cal + 500]
  det.calibrate(cal)
  np.testing.assert_array_equal(det.pvalues(x), conformal_pvalues(det.decision_function(cal), det.decision_function(x)))
  np.testing.assert_array_equal(det.predict(x, alpha=alpha), (det.pvalues(x) <= alpha).astype(int))


def test_fit_holds_out_a_calibration_split():
  rng = np.random.default_rng(4)
  det = ContrastiveFlowDetector(method="flow", calibration_fraction=0.25, steps=20, hidden=(8,)).fit(
      rng.normal(size=(400, 3)))
  assert det.calibration_scores_.shape == (100,)
  assert det.decision_scores_.shape == (400,)
  # The held-out scores are some 100 of the training-data scores.
  assert np.isin(det.calibration_scores_, det.decision_scores_).all()


def test_save_load_round_trip_gives_identical_scores(tmp_path):
  rng = np.random.default_rng(5)
  x = rng.normal(size=(500, 3)) * [1.0, 10.0, 0.1] + 5.0  # standardisation matters
  det = ContrastiveFlowDetector(method="cf", num_blocks=2, hidden=(16,), steps=50).fit(x)
  path = str(tmp_path / "det.npz")
  det.save(path)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["det.npz"]   # no temp file left behind
  loaded = ContrastiveFlowDetector.load(path)
  test = rng.normal(size=(200, 3)) * 3 + 5.0
  np.testing.assert_array_equal(loaded.decision_function(test), det.decision_function(test))
  np.testing.assert_array_equal(loaded.pvalues(test), det.pvalues(test))
  np.testing.assert_array_equal(loaded.predict(test), det.predict(test))
  np.testing.assert_array_equal(loaded.decision_scores_, det.decision_scores_)
  assert loaded.get_params() == det.get_params()
  assert (loaded.threshold_, loaded.eps_) == (det.threshold_, det.eps_)
  for name in ("mean", "std"):
    np.testing.assert_array_equal(loaded.preprocessing_[1][name], det.preprocessing_[1][name])


def test_compute_dtype_is_pinned_recorded_and_kept_by_save_and_load(tmp_path, monkeypatch):
  from cnf_jax.flows import flow as flow_lib
  rng = np.random.default_rng(2)
  x, test = rng.normal(size=(300, 4)), 2 * rng.normal(size=(50, 4))
  kwargs = dict(method="flow", num_blocks=2, hidden=(16,), steps=50, batch_size=64, noise_std=0.1)
  f32 = ContrastiveFlowDetector(compute_dtype="float32", **kwargs).fit(x)
  bf16 = ContrastiveFlowDetector(compute_dtype="bfloat16", **kwargs).fit(x)
  assert (f32.compute_dtype_, bf16.compute_dtype_) == ("float32", "bfloat16")
  a, b = f32.decision_function(test), bf16.decision_function(test)
  assert not np.array_equal(a, b)   # bf16 products were really used
  np.testing.assert_allclose(b, a, rtol=0.05, atol=0.5)
  # 'auto' resolves on the machine that fits; a loaded detector scores with the fitted dtype
  # on a machine where 'auto' would give the other one.
  monkeypatch.setattr(flow_lib, "cpu_has_bf16_matrix_unit", lambda: True)
  auto = ContrastiveFlowDetector(**kwargs).fit(x)
  assert auto.compute_dtype_ == "bfloat16"
  auto.save(str(tmp_path / "det.npz"))
  monkeypatch.setattr(flow_lib, "cpu_has_bf16_matrix_unit", lambda: False)
  loaded = ContrastiveFlowDetector.load(str(tmp_path / "det.npz"))
  assert loaded.compute_dtype_ == "bfloat16" and loaded.get_params()["compute_dtype"] == "auto"
  np.testing.assert_array_equal(loaded.decision_function(test), auto.decision_function(test))
  with pytest.raises(UserInputError, match=r"compute_dtype='float16'\): choose one of 'auto', 'float32'"):
    ContrastiveFlowDetector(compute_dtype="float16", **kwargs).fit(x)


@pytest.mark.parametrize("normalize", ["standardize", "sphere"])
def test_constant_columns_are_dropped_recorded_and_scored_the_same_way(tmp_path, normalize):
  # A dead ReLU unit (always 0) and a stuck sensor (always 3.5): the detector models the other
  # columns, so it scores exactly as one fitted on the table without them, also after save/load.
  rng = np.random.default_rng(0)
  X = rng.normal(size=(300, 4)) + 2.0
  with_constant = np.insert(np.insert(X, 1, 0.0, axis=1), 4, 3.5, axis=1)   # columns 1 and 4 constant
  test = rng.normal(size=(40, 4)) + 2.0
  test_with = np.insert(np.insert(test, 1, 0.0, axis=1), 4, 3.5, axis=1)
  test_with[:5, 1] = 9.0   # new rows may differ there: those columns are not scored
  kwargs = dict(steps=50, num_blocks=2, hidden=(16,), batch_size=64, normalize=normalize)
  det = ContrastiveFlowDetector(method="flow", **kwargs).fit(with_constant)
  plain = ContrastiveFlowDetector(method="flow", **kwargs).fit(X)
  np.testing.assert_array_equal(det.constant_columns_, [1, 4])
  assert det.n_features_in_ == 6 and plain.constant_columns_.size == 0
  np.testing.assert_allclose(det.decision_function(test_with), plain.decision_function(test), rtol=1e-6)
  det.save(str(tmp_path / "det.npz"))
  again = ContrastiveFlowDetector.load(str(tmp_path / "det.npz"))
  np.testing.assert_array_equal(again.constant_columns_, [1, 4])
  np.testing.assert_array_equal(again.decision_function(test_with), det.decision_function(test_with))


def test_scaled_noise_is_a_fixed_fraction_of_the_normalised_columns_spread(tmp_path):
  """noise_std='scaled': 0.6 with standardize; on the sphere, 0.6 times the
  columns' root-mean-square std, so that unit vectors are not drowned in noise."""
  rng = np.random.default_rng(3)
  # Unit vectors near one pole of the 16-d sphere. Inliers spread 0.03 along axes 1-4 and 0.003
  # along the others; outliers the same around the same pole but along axes 5-8: the same
  # distance from the mean, another shape. The shape is far finer than a plain noise of 0.6.
  def cap(wide, n):
    x = np.zeros((n, 16))
    x[:, 0] = 1.0
    x[:, 1:] = 0.003 * rng.normal(size=(n, 15))
    x[:, wide] = 0.03 * rng.normal(size=(n, 4))
    return x / np.linalg.norm(x, axis=1, keepdims=True)
  x_train, test_in, test_out = cap(slice(1, 5), 2000), cap(slice(1, 5), 300), cap(slice(5, 9), 300)

  std = ContrastiveFlowDetector(method="flow", noise_std="scaled", **SMALL).fit(x_train)
  assert std.noise_std_ == 0.6 and std.config().preprocess.noise_std == 0.6
  auto = ContrastiveFlowDetector(method="flow", normalize="sphere", noise_std="scaled", **SMALL).fit(x_train)
  # Resolved on the training split (80% of x_train after calibration): close to all of x_train's.
  rms = np.sqrt(np.mean(np.var(x_train, axis=0)))
  assert 0.6 * 0.9 * rms < auto.noise_std_ < 0.6 * 1.1 * rms
  assert auto.config().preprocess.noise_std == auto.noise_std_
  plain = ContrastiveFlowDetector(method="flow", normalize="sphere", noise_std=0.6, **SMALL).fit(x_train)
  assert plain.noise_std_ == 0.6
  # Measured: auto 0.79, plain 0.39, standardize (which rescales each column) 1.00.
  assert _auroc(auto, test_in, test_out) > 0.7
  assert _auroc(plain, test_in, test_out) < 0.55
  auto.save(str(tmp_path / "auto.npz"))
  assert ContrastiveFlowDetector.load(str(tmp_path / "auto.npz")).noise_std_ == auto.noise_std_


def test_auto_noise_is_chosen_by_heldout_likelihood(tmp_path):
  """noise_std='auto' (the default) keeps, of the candidate noises, the one whose ML flow gives
  the held-out training rows the highest mean log-likelihood: little noise for thin structure
  with many rows, much for a few rows in many dimensions; no label is used."""
  rng = np.random.default_rng(5)
  # Many rows on a thin circle (radial std 0.02 of a radius-1 circle): outliers at the centre
  # and just off the circle, inside the blur of a large noise.
  angle = rng.uniform(0, 2 * np.pi, 3000)
  ring = np.stack([np.cos(angle), np.sin(angle)], 1) * (1 + 0.02 * rng.normal(size=(3000, 1)))
  x_train, test_in = ring[:2500], ring[2500:]
  a = rng.uniform(0, 2 * np.pi, 300)
  test_out = np.stack([np.cos(a), np.sin(a)], 1) * rng.choice([0.75, 1.25], size=(300, 1))
  det = ContrastiveFlowDetector(method="cf", **SMALL).fit(x_train)
  grid = [0.03, 0.1, 0.3, 0.6, 1.0]   # standardize: the spread unit is exactly 1
  assert sorted(det.noise_selection_) == grid
  best = max(det.noise_selection_, key=det.noise_selection_.get)
  assert det.noise_std_ == best and det.config().preprocess.noise_std == best
  assert det.noise_std_ <= 0.1, det.noise_selection_
  assert np.isfinite(det.eps_)
  scaled = ContrastiveFlowDetector(method="cf", noise_std="scaled", **SMALL).fit(x_train)
  assert scaled.noise_selection_ == {} and scaled.noise_std_ == 0.6
  # Measured: auto 0.99, scaled 0.80.
  assert _auroc(det, test_in, test_out) > _auroc(scaled, test_in, test_out) + 0.1
  det.save(str(tmp_path / "auto.npz"))
  again = ContrastiveFlowDetector.load(str(tmp_path / "auto.npz"))
  assert again.noise_selection_ == det.noise_selection_ and again.noise_std_ == det.noise_std_

  # 40 rows in 8 dimensions: a little noise overfits the rows and the held-out ones fall far off.
  few = ContrastiveFlowDetector(method="flow", calibration_fraction=0, **SMALL).fit(rng.normal(size=(40, 8)))
  assert few.noise_std_ >= 0.3, few.noise_selection_
  # Under NOISE_MIN_ROWS training rows there is no held-out choice: the fixed 'scaled' noise.
  tiny = ContrastiveFlowDetector(method="flow", calibration_fraction=0, **SMALL).fit(rng.normal(size=(15, 3)))
  assert tiny.noise_selection_ == {} and tiny.noise_std_ == 0.6


def test_a_diverging_noise_candidate_loses_instead_of_failing_the_fit():
  from cnf_jax import detector as detector_module
  assert detector_module.choose_noise({0.1: -np.inf, 0.3: -2.0, 0.6: -2.0}) == 0.6   # ties: the larger
  with pytest.raises(UserInputError, match="every candidate noise level diverged"):
    detector_module.choose_noise({0.1: -np.inf, 0.3: np.nan})


def test_silverman_noise_is_the_kde_bandwidth_rule():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(500, 3)) * [1.0, 5.0, 0.1]
  det = ContrastiveFlowDetector(method="flow", noise_std="silverman", calibration_fraction=0, steps=5,
                                num_blocks=2, hidden=(8,)).fit(x)
  # standardize: every column has std 1, so the rule is (4 / ((3 + 2) * 500)) ** (1 / 7).
  assert det.noise_std_ == pytest.approx((4 / 2500) ** (1 / 7)) and det.config().preprocess.noise_std == det.noise_std_
  fewer = ContrastiveFlowDetector(method="flow", noise_std="silverman", calibration_fraction=0, steps=5,
                                  num_blocks=2, hidden=(8,)).fit(x[:50])
  assert fewer.noise_std_ > det.noise_std_
