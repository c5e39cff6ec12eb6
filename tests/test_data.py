"""Deterministic batching and validation of feature arrays."""
import numpy as np
import pytest

from cnf_jax.data import task_data
from cnf_jax.errors import UserInputError


def test_epoch_sampler_visits_every_example_once_per_epoch_and_is_deterministic():
  sampler = task_data.EpochSampler(10, 4, seed=3)
  seen = np.concatenate([sampler.indices(s) for s in range(5)])   # 20 draws = 2 epochs
  assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
  fresh = task_data.EpochSampler(10, 4, seed=3)
  np.testing.assert_array_equal(fresh.indices(3), sampler.indices(3))   # random access = resume
  assert not np.array_equal(task_data.EpochSampler(10, 4, seed=4).indices(0), fresh.indices(0))


def test_batch_larger_than_dataset_wraps_over_epochs():
  idx = task_data.EpochSampler(3, 7, seed=0).indices(0)
  assert idx.shape == (7,) and set(idx) == {0, 1, 2}


def _data(**kw):
  base = dict(inliers=np.ones((4, 3)), contrastive=np.ones((5, 3)), test=np.ones((6, 3)),
              test_is_anomaly=np.array([0, 1, 0, 1, 0, 1]))
  base.update(kw)
  return task_data.TaskData(**base)


@pytest.mark.parametrize("kw,pattern", [
    (dict(inliers=np.zeros((0, 3))), "inlier training features: the set is empty"),
    (dict(inliers=np.array([[1.0, np.nan, 0.0]] * 4)), "non-finite"),
    (dict(test=np.full((6, 3), np.inf)), "test features: 18 non-finite"),
    (dict(contrastive=np.ones((5, 4))), "contrastive features: has 4 features but the inliers have 3"),
    (dict(test_is_anomaly=np.zeros(6)), "both inliers and anomalies"),
    (dict(test_is_anomaly=np.zeros(5)), "5 labels for 6 test samples"),
    (dict(inliers=np.ones(4)), "expected a 2-D array"),
    (dict(contrastive=None), "need contrastive data"),
])
def test_validate_rejects_bad_arrays_with_clear_messages(kw, pattern):
  with pytest.raises(UserInputError, match=pattern):
    task_data.validate(_data(**kw), needs_contrastive=True)


def test_validate_returns_float32():
  out = task_data.validate(_data(), needs_contrastive=True)
  assert out.inliers.dtype == np.float32 and out.test_is_anomaly.dtype == bool
