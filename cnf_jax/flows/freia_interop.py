"""Copying the weights of a FrEIA 0.2 SequenceINN of AllInOne blocks into a cnf_jax Flow.

Used by the parity test and the FrEIA benchmark. Takes the torch modules as
duck-typed objects and never imports torch, so the JAX side stays torch-free.
"""
from typing import Any

import jax
import numpy as np


def _numpy(t) -> np.ndarray:
  return t.detach().cpu().float().numpy()


def variables_from_freia(inn: Any, variables: dict) -> dict:
  """Returns `variables` ({"params", "constants"} of a Flow) with the weights of `inn`.

  Args:
    inn: `FrEIA.framework.SequenceINN` whose modules are AllInOneBlocks with
      `nn.Sequential` subnets of Linear/activation layers.
    variables: variables of a matching `Flow(block="allinone")` (same dim,
      number of blocks and hidden widths), e.g. from `init_flow`.
  Linear weights [out, in] become Dense kernels [in, out]; global_scale and
  global_offset [1, D] become [D]; w_perm [D, D] is copied as is.
  """
  params = jax.tree.map(np.asarray, variables["params"])
  constants = jax.tree.map(np.asarray, variables["constants"])
  blocks = list(inn.module_list)
  if len(blocks) != len(params):
    raise ValueError(f"FrEIA model has {len(blocks)} blocks, the flow {len(params)}")
  for i, block in enumerate(blocks):
    ours = params[f"block_{i}"]
    dim = ours["global_scale"].shape[0]
    linears = [m for m in block.subnet if hasattr(m, "weight") and hasattr(m, "bias")]
    if len(linears) != len(ours["subnet"]):
      raise ValueError(f"block {i}: FrEIA subnet has {len(linears)} linear layers, the flow {len(ours['subnet'])}")
    for j, lin in enumerate(linears):
      ours["subnet"][f"dense_{j}"]["kernel"] = _numpy(lin.weight).T.copy()
      ours["subnet"][f"dense_{j}"]["bias"] = _numpy(lin.bias).copy()
    ours["global_scale"] = _numpy(block.global_scale).reshape(dim)
    ours["global_offset"] = _numpy(block.global_offset).reshape(dim)
    constants[f"block_{i}"]["w_perm"] = _numpy(block.w_perm).reshape(dim, dim)
  return {"params": params, "constants": constants}
