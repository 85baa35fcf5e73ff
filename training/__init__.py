"""Training: train state, optimizers, precision and loss scaling, steps, checkpoints, loop."""
