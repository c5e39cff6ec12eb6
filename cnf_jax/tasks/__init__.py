"""Experiment tasks: where the feature vectors come from and what is reported beyond AUROC.

A task module provides
  load_data(config) -> cnf_jax.data.task_data.TaskData
  analyze(config, workdir, data, log_prob_fns, results) -> dict of extra results
where `data` is preprocessed and log_prob_fns maps a model name to a
function x [N, D] -> log p(x) [N].
"""
import importlib

from cnf_jax.errors import UserInputError

TASKS = ("toy1d", "toy2d", "oneclass", "dataset_vs_dataset", "npz", "tabular")


def get(name: str):
  if name not in TASKS:
    raise UserInputError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
  return importlib.import_module(f"cnf_jax.tasks.{name}")
