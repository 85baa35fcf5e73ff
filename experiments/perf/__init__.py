"""What tools.bench, tools.plan and tools.hlo_audit measure: the step, checkpoints, feeds,
the loop, resumes, the HF peer, and XLA's HLO text."""
