"""Dataset against dataset on precomputed image features (paper 5.2.4, Table 4).

Inliers: every training feature of `data.inlier_source` (CIFAR-10, all classes:
a multi-modal in-distribution); contrastive: as in the one-class task (Tiny
ImageNet standing in for ImageNet). Test: the inlier source's test features
(normal) against the test features of each dataset in `data.anomaly_sources`
(comma-separated, e.g. 'cifar100,svhn_cropped,celeb_a'; anomalies).

results.json: "auroc" over the whole test set; "auroc_by_group" and
"auroc_extra" both hold, per anomaly dataset, the AUROC of the inlier test set
against that dataset alone (auroc_extra is what the report's dataset-vs-dataset
table reads).

Feature datasets and the error for a missing one: see cnf_jax/tasks/features.py.
"""
import numpy as np

from cnf_jax.data.task_data import TaskData
from cnf_jax.errors import UserInputError
from cnf_jax.tasks import features


def anomaly_sources(config):
  names = [s.strip() for s in config.data.anomaly_sources.split(",") if s.strip()]
  if not names:
    raise UserInputError("config data.anomaly_sources is empty; name the test-time anomaly datasets, "
                         "e.g. cifar100,svhn_cropped,celeb_a")
  if config.data.inlier_source in names:
    raise UserInputError(f"data.anomaly_sources lists the inlier source {config.data.inlier_source!r} itself")
  return names


def load_data(config) -> TaskData:
  d = config.data
  others = anomaly_sources(config)
  test_split = d.get("test_split", "test")
  features.require(config, [(d.inlier_source, "train"), (d.inlier_source, test_split),
                            (d.contrastive_source, d.contrastive_split)] + [(o, test_split) for o in others])
  train = features.load(config, d.inlier_source, "train")
  inliers = train.features
  pick = features.random_subset(len(inliers), d.train_limit, config.seed, 13)
  if pick is not None:
    inliers = inliers[pick]
  # Test sets: the inlier source (group 0) and one group per anomaly dataset, each drawn down to
  # test_limit on its own so that every dataset keeps its share.
  sets = []
  for g, source in enumerate([d.inlier_source] + others):
    fs = features.load(config, source, test_split)
    rows = features.random_subset(len(fs), d.test_limit, config.seed, 12 + 100 * g)
    rows = np.arange(len(fs)) if rows is None else rows
    sets.append((source, fs.features[rows], fs.index[rows], fs.metadata.get("source_detail", source)))
  test = np.concatenate([x for _, x, _, _ in sets])
  group = np.concatenate([np.full(len(x), g, np.int64) for g, (_, x, _, _) in enumerate(sets)])
  is_anomaly = group > 0
  normal = sets[0][1]
  extra = {source: (np.concatenate([normal, x]), np.r_[np.zeros(len(normal), bool), np.ones(len(x), bool)])
           for source, x, _, _ in sets[1:]}
  return TaskData(inliers=inliers, contrastive=features.contrastive_features(config), test=test,
                  test_is_anomaly=is_anomaly, test_group=group, group_names=[s for s, _, _, _ in sets],
                  extra_test_sets=extra, test_index=np.concatenate([i for _, _, i, _ in sets]),
                  test_source_id=group, test_sources=[detail for _, _, _, detail in sets])


def analyze(config, workdir, data, log_prob_fns, results) -> dict:
  out = {"inlier_source": config.data.inlier_source, "anomaly_sources": anomaly_sources(config),
         "group_names": list(data.group_names)}
  if data.test_index is not None:
    out.update(features.write_test_index(workdir, data.test_sources, data.test_source_id, data.test_index))
  return out
