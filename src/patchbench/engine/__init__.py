"""Training engine: the loop, optimizers, precision, checkpoints, measurement, DDP."""
