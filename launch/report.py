"""Old name of `python -m cnf_jax.report` (same flags), kept so that old commands keep working."""
from cnf_jax import cli, report
if __name__ == "__main__": cli.run(report.main)
