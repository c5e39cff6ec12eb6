"""Fixed (untrained) mixing matrices used between coupling blocks.

Both kinds are orthogonal, so they add nothing to log|det J|.
"""
import jax
import jax.numpy as jnp


def random_permutation_matrix(rng: jax.Array, dim: int) -> jax.Array:
  """A random hard permutation matrix W [D, D] with W[i, perm[i]] = 1 (FrEIA's layout)."""
  perm = jax.random.permutation(rng, dim)
  return jax.nn.one_hot(perm, dim, dtype=jnp.float32)


def random_rotation_matrix(rng: jax.Array, dim: int) -> jax.Array:
  """A Haar-random rotation W in SO(D) [D, D], like scipy's special_ortho_group.

  QR of a Gaussian matrix with the sign of R's diagonal folded into Q gives a
  Haar-distributed orthogonal matrix; flipping one row when det = -1 moves it
  into SO(D).
  """
  a = jax.random.normal(rng, (dim, dim), dtype=jnp.float32)
  q, r = jnp.linalg.qr(a)
  q = q * jnp.sign(jnp.diagonal(r))[None, :]
  flip = jnp.where(jnp.linalg.det(q) < 0, -1.0, 1.0)
  return q.at[0].multiply(flip)


def mixing_matrix(rng: jax.Array, dim: int, soft: bool) -> jax.Array:
  """The fixed W of an AllInOne block: a rotation if `soft`, else a permutation."""
  return random_rotation_matrix(rng, dim) if soft else random_permutation_matrix(rng, dim)
