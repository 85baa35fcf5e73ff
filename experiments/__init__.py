"""t5pod experiments: sweeps, studies and their analyses, the WikiSpell comparisons."""
