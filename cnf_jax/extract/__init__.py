"""The PyTorch feature-extraction stage: images -> pretrained backbone -> feature datasets on disk.

Installed by the `extract` extra and never imported by the JAX training path,
which reads the results with `cnf_jax.data.feature_dataset`. Run it as
`python -m cnf_jax.extract --help`; see README.md in this folder.
"""
