"""Normalizing flows: pure coupling functions and thin Flax modules that own their parameters."""
from cnf_jax.flows.affine import AffineCouplingBlock, affine_coupling_forward, affine_coupling_inverse
from cnf_jax.flows.allinone import AllInOneBlock, allinone_forward, allinone_inverse
from cnf_jax.flows.flow import BLOCK_TYPES, Flow, flow_from_config, init_flow, standard_normal_log_prob
from cnf_jax.flows.spline import SplineCouplingBlock, spline_coupling_forward, spline_coupling_inverse
