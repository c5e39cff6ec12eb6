"""Helpers for flow tests."""
import jax


def randomise(variables, rng, scale=0.5):
  """Moves every trained parameter away from its (often identity-like) init by N(0, scale^2)."""
  leaves, tree = jax.tree.flatten(variables["params"])
  keys = jax.random.split(rng, len(leaves))
  leaves = [l + scale * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)]
  return {**variables, "params": jax.tree.unflatten(tree, leaves)}
