"""The paper's own stack for the benchmarks: PyTorch + FrEIA 0.2 AllInOne flow and contrastive loss.

Benchmark-only (needs the `bench` extra: torch, FrEIA). Mirrors exactly what
cnf_jax computes: log p with the -(D/2) log 2 pi term, loss
mean(-log p(x_in)) + mean(max(log p(y_con), eps)), one pass over both batches.
"""
import math

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import torch
from torch import nn


def build_flow(dim: int, blocks: int, width: int, depth: int = 2, clamp: float = 2.0,
               permute_soft: bool = True) -> Ff.SequenceINN:
  """SequenceINN of `blocks` AllInOne blocks with Linear-ReLU subnets of `depth` hidden layers."""

  def subnet(c_in, c_out):
    layers, prev = [], c_in
    for _ in range(depth):
      layers += [nn.Linear(prev, width), nn.ReLU()]
      prev = width
    return nn.Sequential(*layers, nn.Linear(prev, c_out))

  inn = Ff.SequenceINN(dim)
  for _ in range(blocks):
    inn.append(Fm.AllInOneBlock, subnet_constructor=subnet, affine_clamping=clamp, permute_soft=permute_soft)
  return inn


def log_prob(inn: Ff.SequenceINN, x: torch.Tensor) -> torch.Tensor:
  z, log_det = inn(x)
  return -0.5 * (z * z).sum(1) - 0.5 * x.shape[1] * math.log(2 * math.pi) + log_det


def contrastive_loss(inn, x_in: torch.Tensor, x_con: torch.Tensor, eps: float) -> torch.Tensor:
  lp = log_prob(inn, torch.cat([x_in, x_con]))
  lp_in, lp_con = lp[:x_in.shape[0]], lp[x_in.shape[0]:]
  return -lp_in.mean() + torch.clamp(lp_con, min=eps).mean()


def make_train_step(inn, lr: float, eps: float):
  """Returns step(x_in, x_con) -> loss (float): one Adam step on the contrastive loss."""
  opt = torch.optim.Adam([p for p in inn.parameters() if p.requires_grad], lr=lr)

  def step(x_in, x_con):
    opt.zero_grad(set_to_none=True)
    loss = contrastive_loss(inn, x_in, x_con, eps)
    loss.backward()
    opt.step()
    return loss

  return step
