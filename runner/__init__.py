"""t5pod runs: a run as a validated value, the one entry point that trains it, its resume
checks, and gin at the edge (the flags the CLIs in tools/ parse into config values)."""
