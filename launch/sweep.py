"""Old name of `python -m cnf_jax.sweep` (same flags), kept so that old commands keep working."""
from cnf_jax import cli, sweep
if __name__ == "__main__": cli.run(sweep.main)
