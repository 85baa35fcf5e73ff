"""This host's batches with a saveable position: from the live pipeline or a task cache, and
TreeDNN's branch feeds."""
