"""Instruction tuning: Flan-style templates, the sources of their rows, tasks and mixtures."""
