"""Training: losses, metrics, EMA of weights, atomic checkpoints (the trainer builds on these)."""
