"""cnf_jax: anomaly detection with contrastive normalizing flows (JAX/Flax).

The flow maths lives in `cnf_jax.flows` as pure functions of arrays with thin
Flax modules around them; `cnf_jax.objectives` holds the contrastive loss,
`cnf_jax.train` the compiled training loop and `cnf_jax.main` the CLI.
"""
__version__ = "0.1.0"
