"""The training core: objectives, the model plan, the one training loop, checkpoints."""
