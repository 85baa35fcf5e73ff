"""Weights in and out of other codebases: HF transformers directories and t5x checkpoints."""
