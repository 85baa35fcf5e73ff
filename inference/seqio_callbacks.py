"""seqio.Evaluator's model callbacks over a t5pod predictor.

`predictor` is anything with `predict_tokens(encoder_input_tokens, byte_...=None)` ->
[B, max_decode_length] ids and `score_tokens(encoder_input_tokens, decoder_target_tokens,
byte_...=None)` -> [B] summed log-likelihoods: inference.predictor.Predictor (a model on disk)
or inference.core.Inference (the train loop's params). Decoding is
whatever its DecodeConfig says (greedy, beam, sampling); scores come from the same model.

The Evaluator hands over its cached, enumerated model dataset: (index, features) with
`encoder_input_tokens` and `decoder_target_tokens` padded to fixed lengths. Every batch is
padded to `batch_size` rows, so each task compiles one shape.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def _batches(dataset, batch_size: int):
    """(indices, {feature: [batch_size, L]}, real rows) from an enumerated tf.data."""
    for indices, features in dataset.batch(batch_size).as_numpy_iterator():
        n = len(indices)
        padded = {k: np.pad(v, ((0, batch_size - n),) + ((0, 0),) * (v.ndim - 1))
                  for k, v in features.items()}
        yield indices, padded, n


def predict_fn(predictor, batch_size: int = 32) -> Callable:
    """seqio predict_fn: dataset -> [(index, generated ids)], each [max_decode_length] (up to
    EOS, then 0; seqio's vocabularies decode up to EOS)."""
    def fn(dataset, model_feature_shapes=None):
        out = []
        for indices, batch, n in _batches(dataset, batch_size):
            tokens = predictor.predict_tokens(batch["encoder_input_tokens"],
                                              batch.get("byte_encoder_input_tokens"))
            out.extend((int(i), row.tolist()) for i, row in zip(indices, tokens[:n],
                                                                 strict=True))
        return out
    return fn


def score_fn(predictor, batch_size: int = 32) -> Callable:
    """seqio score_fn: dataset -> [(index, summed log-likelihood of the targets)]."""
    def fn(dataset, model_feature_shapes=None):
        out = []
        for indices, batch, n in _batches(dataset, batch_size):
            scores = predictor.score_tokens(batch["encoder_input_tokens"],
                                            batch["decoder_target_tokens"],
                                            batch.get("byte_encoder_input_tokens"))
            out.extend((int(i), float(s)) for i, s in zip(indices, scores[:n], strict=True))
        return out
    return fn
