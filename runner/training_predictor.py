"""Decode and score with the params a train loop holds, for its periodic inference eval.

The same two calls as runner.predictor.Predictor (`predict_tokens`, `score_tokens`), over a
Trainer's model, mesh and rules and whatever params are set, so seqio callbacks
(runner/seqio_callbacks.py) run against either. Every host passes the same whole batch; it
becomes a batch-sharded global array and the outputs come back replicated, so this also
runs on several hosts.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

import partitioning
from model_zoo.axes import activation_rules
from model_zoo.decoding import DecodeConfig, decode
from model_zoo.scoring import sequence_log_likelihood


class TrainingPredictor:
    def __init__(self, trainer, decode_config: DecodeConfig, seed: int = 0):
        self.mesh, self.rules = trainer.mesh, trainer.rules
        self.dp = partitioning.data_parallel_degree(self.rules, self.mesh)
        self.batch_sharding = partitioning.batch_sharding(self.rules, self.mesh)
        self.params = None
        self.rng = jax.random.key(seed)
        mdef, cfg = trainer.model_def, decode_config
        replicated = NamedSharding(self.mesh, PartitionSpec())

        def decoded(p, e, r, b):
            out = decode(mdef.bind(p), e, cfg, r, b)
            return out[0] if isinstance(out, tuple) else out

        self._decode = jax.jit(decoded, out_shardings=replicated)
        self._score = jax.jit(lambda p, e, t, b: sequence_log_likelihood(mdef.bind(p), e, t, b),
                              out_shardings=replicated)

    def _global(self, rows: np.ndarray | None):
        if rows is None:
            return None
        batch = -(-rows.shape[0] // self.dp) * self.dp
        rows = np.pad(rows, ((0, batch - rows.shape[0]), (0, 0)))
        return jax.make_array_from_callback(rows.shape, self.batch_sharding, lambda i: rows[i])

    def _run(self, fn, *args):
        if self.params is None:
            raise RuntimeError("TrainingPredictor.params is not set")
        with jax.set_mesh(self.mesh), activation_rules(
                partitioning.activation_resolver(self.rules, self.mesh)):
            return np.asarray(fn(self.params, *args))

    def predict_tokens(self, encoder_input_tokens, byte_encoder_input_tokens=None):
        self.rng, key = jax.random.split(self.rng)
        out = self._run(self._decode, self._global(encoder_input_tokens), key,
                        self._global(byte_encoder_input_tokens))
        return out[: encoder_input_tokens.shape[0]]

    def score_tokens(self, encoder_input_tokens, decoder_target_tokens,
                     byte_encoder_input_tokens=None):
        out = self._run(self._score, self._global(encoder_input_tokens),
                        self._global(decoder_target_tokens),
                        self._global(byte_encoder_input_tokens))
        return out[: encoder_input_tokens.shape[0]]
