"""seqio vocabularies, preprocessors, tasks and mixtures (the only place TensorFlow is imported)."""
