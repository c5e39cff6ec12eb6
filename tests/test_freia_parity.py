"""Parity with FrEIA 0.2: the same weights give the same z and log|det J| as FrEIA's AllInOneBlock.

Builds an `Ff.SequenceINN` of AllInOne blocks in PyTorch, copies every
parameter (subnet weights, global_scale, global_offset, w_perm) into the JAX
flow and compares forward and inverse passes in float32.
"""
import itertools

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import jax
import numpy as np
import pytest
import torch
from torch import nn

from cnf_jax.flows import Flow, init_flow
from cnf_jax.flows.freia_interop import variables_from_freia

DIM, BLOCKS, HIDDEN = 7, 4, 32


def _subnet(c_in, c_out):
  return nn.Sequential(nn.Linear(c_in, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                       nn.Linear(HIDDEN, c_out))


def _freia_flow(**kwargs):
  inn = Ff.SequenceINN(DIM)
  for _ in range(BLOCKS):
    inn.append(Fm.AllInOneBlock, subnet_constructor=_subnet, affine_clamping=2.0, **kwargs)
  with torch.no_grad():  # move the learned parameters away from their init, like a trained model.
    for block in inn.module_list:
      block.global_scale.add_(0.3 * torch.randn_like(block.global_scale))
      block.global_offset.add_(0.2 * torch.randn_like(block.global_offset))
  return inn


CASES = [dict(permute_soft=soft, global_affine_type=g, reverse_permutation=rev)
         for soft, g, rev in itertools.product((True, False), ("SOFTPLUS", "SIGMOID", "EXP"), (False, True))]


@pytest.mark.parametrize("kwargs", CASES, ids=lambda k: "-".join(str(v) for v in k.values()))
def test_allinone_matches_freia(kwargs):
  torch.manual_seed(0)
  np.random.seed(0)
  inn = _freia_flow(**kwargs)
  model = Flow(dim=DIM, block="allinone", num_blocks=BLOCKS, hidden=(HIDDEN, HIDDEN), clamp=2.0,
               clamp_activation="tanh", **kwargs)
  variables = variables_from_freia(inn, init_flow(model, jax.random.key(0)))

  x = torch.randn(64, DIM)
  with torch.no_grad():
    z_ref, log_det_ref = inn(x)
    x_back_ref, log_det_inv_ref = inn(z_ref, rev=True)
  z, log_det = model.apply(variables, x.numpy(), method=Flow.forward)
  np.testing.assert_allclose(z, z_ref.numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(log_det, log_det_ref.numpy(), rtol=1e-5, atol=1e-5)

  x_back, log_det_inv = model.apply(variables, z_ref.numpy(), method=Flow.inverse)
  np.testing.assert_allclose(x_back, x_back_ref.numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(log_det_inv, log_det_inv_ref.numpy(), rtol=1e-5, atol=1e-5)

  # Our log p keeps the -(D/2) log(2 pi) that FrEIA's examples drop.
  log_p = model.apply(variables, x.numpy(), method=Flow.log_prob)
  expected = -0.5 * (z_ref.numpy() ** 2).sum(1) - 0.5 * DIM * np.log(2 * np.pi) + log_det_ref.numpy()
  np.testing.assert_allclose(log_p, expected, rtol=1e-5, atol=1e-4)
