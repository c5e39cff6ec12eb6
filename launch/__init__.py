"""Cloud TPU batch-launch docs (README.md); `launch.sweep` and `launch.report` are old names of
`python -m cnf_jax.sweep` and `python -m cnf_jax.report`. cnf_jax never imports this folder."""
