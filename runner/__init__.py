"""t5pod runs: a run as a validated value, the one entry point that trains it, and what the
CLIs in tools/ compose (gin at the edge, model_dirs, prediction, sweeps, comparisons)."""
