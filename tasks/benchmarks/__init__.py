"""Evaluation benchmarks from their published files: MMLU and BIG-Bench Hard, scored by rank
classification or exact match, reported as macro averages."""
