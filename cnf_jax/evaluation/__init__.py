"""Scoring: metrics (AUROC, ...), the classical baselines and conformal p-values."""
