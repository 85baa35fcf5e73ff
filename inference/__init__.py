"""t5pod inference: the jitted decode/score core, the predictor, host rows, seqio callbacks
and the evaluators."""
