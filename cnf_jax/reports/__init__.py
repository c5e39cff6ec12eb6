"""Reports of finished runs and sweeps: markdown tables and plots."""
