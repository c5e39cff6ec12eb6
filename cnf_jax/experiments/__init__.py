"""Runs: configs, one experiment (train + evaluate + write), vmapped sweeps."""
