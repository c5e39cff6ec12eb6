"""cnf_jax: anomaly detection with contrastive normalizing flows (JAX/Flax).

The flow maths lives in `cnf_jax.flows` as pure functions of arrays with thin
Flax modules around them; `cnf_jax.objectives` holds the contrastive loss,
`cnf_jax.train` the compiled training loop and `cnf_jax.main` the CLI.
"""
__version__ = "0.1.0"


def __getattr__(name):
  # Lazy: `import cnf_jax` stays light (no jax, flax or sklearn) until the detector is used.
  if name == "ContrastiveFlowDetector":
    from cnf_jax.detector import ContrastiveFlowDetector
    return ContrastiveFlowDetector
  raise AttributeError(f"module 'cnf_jax' has no attribute {name!r}")
