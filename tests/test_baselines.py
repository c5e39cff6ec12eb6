"""The classical baselines on tiny data where the answer is known; fast ABOD against a direct loop."""
import sys

import numpy as np
import pytest

from cnf_jax.evaluation import baselines
from cnf_jax.experiments import config_lib
from cnf_jax.evaluation import metrics
from cnf_jax.errors import UserInputError


def _blob_and_far_outliers(seed=0, d=4):
  """A Gaussian blob [200, d] to fit on; test: 50 more blob points, then 50 points ~8 sigma away
  around 8 e_0 (the side of the contrastive data of the test below)."""
  rng = np.random.default_rng(seed)
  inliers = rng.normal(size=(200, d))
  far = 8.0 * np.eye(d)[0] + rng.normal(size=(50, d))
  test = np.concatenate([rng.normal(size=(50, d)), far])
  return inliers, test, np.repeat([False, True], 50)


@pytest.mark.parametrize("name", baselines.NAMES)
def test_every_baseline_ranks_far_outliers_above_the_blob(name):
  inliers, test, is_anomaly = _blob_and_far_outliers()
  # mse_ratio is linear in x (2 x . (mean_con - mean_in) + const): it ranks high what lies
  # towards the contrastive mean, here 3 e_0, the side of the far points.
  contrastive = np.random.default_rng(1).normal(size=(200, 4)) + np.array([3.0, 0, 0, 0])
  cfg = config_lib.default_config().baselines
  cfg.mcd_max_samples = 0
  score_fn = baselines.fit(name, inliers, contrastive, cfg, seed=0)
  scores = score_fn(test)
  assert scores.shape == (100,) and scores.dtype == np.float64 and np.isfinite(scores).all()
  assert metrics.auroc(scores, is_anomaly) > 0.99
  # Reversed labels: the same scores rank the blob as the anomalies.
  assert metrics.auroc(scores, ~is_anomaly) < 0.01
  # Deterministic for a seed (MCD's random starts and subsample included).
  np.testing.assert_array_equal(baselines.fit(name, inliers, contrastive, cfg, seed=0)(test), scores)


def test_mse_and_mse_ratio_by_hand_and_where_they_disagree():
  inliers = np.array([[0.0, 0.0], [2.0, 0.0]])        # mean (1, 0)
  contrastive = np.array([[4.0, 0.0], [6.0, 0.0]])    # mean (5, 0)
  x = np.array([[1.0, 0.0], [-3.0, 0.0], [5.0, 0.0]])
  mse = baselines.fit("mse", inliers)(x)
  ratio = baselines.fit("mse_ratio", inliers, contrastive)(x)
  np.testing.assert_allclose(mse, [0.0, 16.0 / 2, 16.0 / 2])           # mean over the 2 features
  np.testing.assert_allclose(ratio, [(0 - 16) / 2, (16 - 64) / 2, (16 - 0) / 2])
  # (-3, 0) and (5, 0) are equally far from the inlier mean (mse ties) but mse_ratio, which uses
  # the contrastive mean, calls the point on the contrastive mean far more anomalous.
  assert mse[1] == mse[2] and ratio[2] - ratio[1] == pytest.approx(32.0)
  with pytest.raises(UserInputError, match="needs contrastive data"):
    baselines.fit("mse_ratio", inliers, None)


def test_knn_methods_and_kde_bandwidth_rule():
  inliers = np.array([[0.0], [1.0], [3.0]])
  cfg = config_lib.default_config().baselines
  cfg.knn_k = 2
  x = np.array([[0.0], [10.0]])
  np.testing.assert_allclose(baselines.fit("knn", inliers, cfg=cfg)(x), [1.0, 9.0])      # 2nd nearest
  cfg.knn_method = "mean"
  np.testing.assert_allclose(baselines.fit("knn", inliers, cfg=cfg)(x), [0.5, 8.0])
  # Gaussian KDE, bandwidth 1, one point at 0: -log N(x; 0, 1).
  kde = baselines.fit("kde", np.zeros((1, 1)))
  np.testing.assert_allclose(kde(np.array([[0.0], [2.0]])), [0.5 * np.log(2 * np.pi), 0.5 * np.log(2 * np.pi) + 2.0])
  assert baselines.median_pairwise_distance(inliers) == pytest.approx(2.0)   # distances 1, 3, 2


def test_exact_kde_equals_the_tree_near_the_inliers_and_the_true_density_far_from_them(monkeypatch):
  rng = np.random.default_rng(3)
  inliers, near = rng.normal(size=(400, 16)), rng.normal(size=(50, 16))
  cfg = config_lib.default_config().baselines
  tree = baselines.fit("kde", inliers, cfg=cfg)
  cfg.kde_exact = True
  exact = baselines.fit("kde", inliers, cfg=cfg)
  np.testing.assert_allclose(exact(near), tree(near), rtol=1e-9)
  # Far away one kernel dominates: -log p = log N + D/2 log(2 pi) + min squared distance / 2 - log(#nearest),
  # here with a single nearest row (the logsumexp keeps it; a sum of exps would underflow to -inf).
  far = inliers[:3] + 60.0
  d2 = ((far[:, None, :] - inliers[None]) ** 2).sum(-1)
  expected = np.log(400) + 8 * np.log(2 * np.pi) + d2.min(1) / 2 - np.log(np.exp(-(d2 - d2.min(1)[:, None]) / 2).sum(1))
  np.testing.assert_allclose(exact(far), expected, rtol=1e-12)
  # Blocks of rows: a small block budget gives the same values as one block.
  monkeypatch.setattr(baselines, "_BLOCK_ENTRIES", 400 * 7)
  np.testing.assert_allclose(baselines.fit("kde", inliers, cfg=cfg)(near), exact(near), rtol=1e-12)


def test_pca_recon_keeps_the_components_that_explain_the_variance_fraction():
  rng = np.random.default_rng(0)
  # Variance 100 along axis 0, 1 along axis 1: 0.9 keeps axis 0 only; the error is x1^2.
  inliers = rng.normal(size=(2000, 2)) * np.array([10.0, 1.0])
  x = np.array([[5.0, 0.0], [0.0, 3.0]])
  np.testing.assert_allclose(baselines.fit("pca_recon", inliers)(x), [0.0, 9.0], atol=0.05)


def test_pca_by_hand():
  # Inliers (+-2, 0), (0, +-1): mean 0, variances 2 and 0.5, so the components are e0 and e1
  # (signs: largest entry positive) explaining 0.8 and 0.2. Without the z-scoring (which
  # would make these inliers isotropic and the components arbitrary) the score of x is
  # |x - e0| / 0.8 + |x - e1| / 0.2.
  inliers = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
  x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
  cfg = config_lib.default_config().baselines
  cfg.pca_standardize = False
  np.testing.assert_allclose(baselines.fit("pca", inliers, cfg=cfg)(x),
                             [1 / 0.8 + 1 / 0.2, 0 / 0.8 + np.sqrt(2) / 0.2, np.sqrt(2) / 0.8 + 0 / 0.2])
  cfg.pca_weighted = False
  np.testing.assert_allclose(baselines.fit("pca", inliers, cfg=cfg)(x), [2.0, np.sqrt(2), np.sqrt(2)])


def test_pca_equals_numpy_z_scores_and_eigenvectors():
  rng = np.random.default_rng(0)
  inliers = rng.normal(size=(50, 3)) @ np.array([[2.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.2]]) + 5.0
  x = rng.normal(size=(7, 3)) + 5.0
  mean, std = inliers.mean(axis=0), inliers.std(axis=0)
  values, vectors = np.linalg.eigh(np.cov(((inliers - mean) / std).T))
  values, vectors = values[::-1], vectors[:, ::-1].T                       # [3], [3 components, 3]
  vectors *= np.sign(vectors[np.arange(3), np.abs(vectors).argmax(axis=1)])[:, None]
  z = (x - mean) / std
  by_hand = (np.linalg.norm(z[:, None, :] - vectors[None], axis=2) / (values / values.sum())).sum(axis=1)
  np.testing.assert_allclose(baselines.fit("pca", inliers)(x), by_hand, rtol=1e-10)


def test_pca_leaves_out_components_without_variance():
  # A constant column and a copy of another: two of the four components explain no variance.
  # PyOD divides by their ratio of ~0 (inf or rounding noise); here the score is the sum over
  # the two components that carry variance, the same as on the two informative columns alone.
  rng = np.random.default_rng(0)
  informative = rng.normal(size=(200, 2)) @ np.array([[2.0, 0.3], [0.0, 1.0]])
  degenerate = np.c_[informative, np.full(200, 7.0), informative[:, 0]]
  x = rng.normal(size=(9, 2)) * 3
  x_degenerate = np.c_[x, np.full(9, 7.0), x[:, 0]]
  scores = baselines.fit("pca", degenerate)(x_degenerate)
  assert np.all(np.isfinite(scores))
  scaler_mean, scaler_std = informative.mean(axis=0), informative.std(axis=0)
  z = np.c_[(x - scaler_mean) / scaler_std, np.zeros(9), (x[:, 0] - scaler_mean[0]) / scaler_std[0]]
  values, vectors = np.linalg.eigh(np.cov(((degenerate[:, [0, 1, 3]] - degenerate[:, [0, 1, 3]].mean(axis=0))
                                           / degenerate[:, [0, 1, 3]].std(axis=0)).T))
  order = np.argsort(values)[::-1][:2]                                     # the two with variance
  vectors = np.insert(vectors[:, order].T, 2, 0.0, axis=1)                 # [2, 4]: 0 on the constant column
  vectors *= np.sign(vectors[np.arange(2), np.abs(vectors).argmax(axis=1)])[:, None]
  ratios = values[order] / values.sum()
  by_hand = (np.linalg.norm(z[:, None, :] - vectors[None], axis=2) / ratios).sum(axis=1)
  np.testing.assert_allclose(scores, by_hand, rtol=1e-8)


def test_fast_abod_equals_a_direct_loop():
  rng = np.random.default_rng(0)
  train = rng.normal(size=(40, 3))
  x = np.concatenate([rng.normal(size=(6, 3)), [[6.0, 0.0, 0.0]], train[:2]])   # two duplicates of training points
  cfg = config_lib.default_config().baselines
  cfg.abod_k = 5
  fast = baselines.fit("abod", train, cfg=cfg)(x)
  np.testing.assert_allclose(fast, baselines.abod_scores_loop(x, train, 5), rtol=1e-10)
  assert fast[6] == fast.max()   # the far point sees its neighbours in a narrow cone.


def test_abod_scores_in_row_blocks_bounded_by_k_times_dim(monkeypatch):
  """k x D entries a scored row: with the bound at 3 rows' worth, 9 rows score in blocks of 3."""
  rng = np.random.default_rng(1)
  train, x = rng.normal(size=(40, 3)), rng.normal(size=(9, 3))
  cfg = config_lib.default_config().baselines
  cfg.abod_k = 5
  whole = baselines.fit("abod", train, cfg=cfg)(x)
  monkeypatch.setattr(baselines, "_BLOCK_ENTRIES", 3 * 5 * 5)   # k * max(D, k) = 25 entries a row
  sizes = []
  real = baselines.abod_scores
  monkeypatch.setattr(baselines, "abod_scores", lambda p, n: sizes.append(len(p)) or real(p, n))
  blocked = baselines.fit("abod", train, cfg=cfg)(x)
  assert sizes == [3, 3, 3]
  np.testing.assert_array_equal(blocked, whole)


def test_abod_by_hand():
  # x at the origin, neighbours (1, 0), (0, 2), (-1, 0): weighted cosines of the three pairs
  # are 0 / (1 * 4), -1 / (1 * 1), 0 / (4 * 1) -> values [0, -1, 0], variance 2/9.
  x = np.zeros((1, 2))
  neighbours = np.array([[[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]]])
  np.testing.assert_allclose(baselines.abod_scores(x, neighbours), [-2.0 / 9.0])


def test_bad_options_and_too_few_inliers():
  cfg = config_lib.default_config().baselines
  cfg.pca_variance = 1.0
  with pytest.raises(UserInputError, match="pca_variance=1.0 must be in"):
    baselines.validate(cfg)
  cfg = config_lib.default_config().baselines
  cfg.knn_method = "max"
  with pytest.raises(UserInputError, match="knn_method='max' is not valid; choose one of largest"):
    baselines.validate(cfg)
  with pytest.raises(UserInputError, match="lof needs 20 neighbours but there are only 5"):
    baselines.fit("lof", np.zeros((5, 2)))
  with pytest.raises(UserInputError, match="unknown baseline 'svm'"):
    baselines.fit("svm", np.zeros((5, 2)))
  cfg = config_lib.default_config().baselines
  cfg.mcd_max_samples = 3
  with pytest.raises(UserInputError, match=r"mcd needs more inliers \(3\) than features \(4\)"):
    baselines.fit("mcd", np.random.default_rng(0).normal(size=(50, 4)), cfg=cfg)


def test_score_sets_fits_once_and_scores_every_set():
  inliers, test, _ = _blob_and_far_outliers()
  scores, seconds = baselines.score_sets(["mse", "knn"], inliers, None, {"a": test, "b": test[:7]})
  assert set(scores) == {"a", "b"} and set(seconds) == {"mse", "knn"}
  np.testing.assert_array_equal(scores["b"]["knn"], scores["a"]["knn"][:7])


def test_pyod_methods_without_pyod_are_a_one_line_config_error(monkeypatch):
  # As if pyod were not installed: importing it (or a module of it) raises ImportError.
  for module in ("pyod", "pyod.models", "pyod.models.base"):
    monkeypatch.setitem(sys.modules, module, None)
  config = config_lib.default_config()
  config.methods = "cf,knn,pyod:IForest"
  with pytest.raises(UserInputError) as e:
    config_lib.validate(config)
  assert str(e.value) == "method 'pyod:IForest' needs PyOD, which is not installed: pip install -e '.[pyod]'"
  with pytest.raises(UserInputError, match="needs PyOD"):
    baselines.fit("pyod:ECOD", np.zeros((5, 2)))
  # Other unknown methods name the pyod:<Name> form too.
  config.methods = "cf,svm"
  with pytest.raises(UserInputError, match=r"entry='svm' is not valid; choose one of cf, .*, mcd, pca_recon, kde_cv, "
                                           r"or pyod:<Name> for a PyOD detector \(e.g. pyod:IForest\)$"):
    config_lib.validate(config)
  assert baselines.is_baseline("pyod:ECOD") and baselines.is_baseline("knn") and not baselines.is_baseline("cf")


def test_kde_cv_chooses_the_bandwidth_with_the_best_held_out_likelihood():
  rng = np.random.default_rng(0)
  # The exact log density equals sklearn's (the tree is exact near the data).
  train, x = rng.normal(size=(300, 3)), rng.normal(size=(40, 3))
  from sklearn.neighbors import KernelDensity
  np.testing.assert_allclose(baselines.gaussian_kde_log_density(train, x, 0.4),
                             KernelDensity(bandwidth=0.4).fit(train).score_samples(x), rtol=1e-6)
  # Many rows on a thin ring in 2-D: a small bandwidth; a few rows of a wide blob in 6-D: a large one.
  angle = rng.uniform(0, 2 * np.pi, 3000)
  ring = np.c_[np.cos(angle), np.sin(angle)] + 0.01 * rng.normal(size=(3000, 2))
  ring_h, ring_values = baselines.kde_cv_bandwidth(ring, seed=0)
  blob_h, blob_values = baselines.kde_cv_bandwidth(rng.normal(size=(30, 6)), seed=0)
  scale = baselines.median_pairwise_distance(ring)
  assert ring_h == max(ring_values, key=ring_values.get) and ring_h <= 0.05 * scale + 1e-12
  assert blob_h == max(blob_values, key=blob_values.get) and len(blob_values) == len(baselines.KDE_CV_FACTORS)
  assert blob_h / baselines.median_pairwise_distance(rng.normal(size=(30, 6))) > 0.2
  # The fitted baseline uses it: scores are -log density at the chosen bandwidth; seed-deterministic.
  score = baselines.fit("kde_cv", ring, seed=0)
  assert score.bandwidth == ring_h
  # (near the ring: far from it, sklearn's tree sums are approximate, see _kde)
  near = ring[:40] + 0.005 * rng.normal(size=(40, 2))
  np.testing.assert_allclose(score(near), -baselines.gaussian_kde_log_density(ring, near, ring_h), rtol=1e-6)
  # Too few rows to split: the median rule.
  few = rng.normal(size=(5, 2))
  assert baselines.kde_cv_bandwidth(few)[0] == pytest.approx(baselines.median_pairwise_distance(few))


def test_euclidean_distances_equal_cdist_also_where_the_blas_form_cancels(monkeypatch):
  # Far pairs, exact duplicates and pairs 1e-9 apart at norm ~1e3, where |x|^2 + |y|^2 - 2 x.y
  # alone would leave an absolute error of ~1e-5: each distance to cdist's within float rounding.
  from scipy.spatial import distance as spatial_distance
  rng = np.random.default_rng(0)
  y = rng.normal(size=(40, 30)) * 300
  x = np.concatenate([rng.normal(size=(50, 30)), y[:5], y[5:10] + 1e-9, y[10:15] * (1 + 1e-12)])
  monkeypatch.setattr(baselines, "_BLOCK_ENTRIES", 7 * 40)   # blocks of 7 rows
  ours = baselines.euclidean_distances(x, y)
  theirs = spatial_distance.cdist(x, y)
  np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-13)
  assert (ours[50:55, :5].diagonal() == 0).all()
