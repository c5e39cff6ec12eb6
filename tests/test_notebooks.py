"""Both Colab notebooks run top to bottom on CPU (small configs), so they cannot rot."""
import os

import nbformat
import pytest
from nbclient import NotebookClient

from cli_util import ROOT, subprocess_env


def _execute(name, tmp_path, **env):
  nb = nbformat.read(os.path.join(ROOT, "colab", name), as_version=4)
  kernel_env = subprocess_env(**env)
  client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": ROOT}})
  client.execute(env=kernel_env)
  return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream"), nb


def _images(nb):
  return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_tpu_quickstart_notebook(tmp_path):
  text, nb = _execute("tpu_quickstart.ipynb", tmp_path, CNF_WORK=str(tmp_path / "work"))
  assert "AUROC: {'cf':" in text
  assert (tmp_path / "work" / "run" / "results.json").exists()
  assert _images(nb) == 2   # score histograms + ROC, training curves


def test_results_explorer_notebook(tmp_path):
  text, nb = _execute("results_explorer.ipynb", tmp_path, CNF_SWEEP_ROOT=str(tmp_path / "sweep"))
  assert "training the demo sweep" in text
  assert text.count(" done ") == 3   # three seeds, each with results.json
  markdown = [o["data"]["text/markdown"] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "text/markdown" in o.get("data", {})]
  assert markdown and "| default |" in markdown[0] and "±" in markdown[0]
  assert _images(nb) == 2
