"""Data on disk: feature datasets written by the extractor stage and read by the JAX side."""
