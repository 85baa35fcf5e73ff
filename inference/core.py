"""Decode and score on a mesh: the jitted steps behind inference.predictor.Predictor and the train
loop's periodic inference eval (inference/seqio_evaluator.py).

Params are sharded on the mesh by the rules as in training; every process passes the same
global rows, each places only its devices' slices, and every process gets the whole result
(inference/host_rows.py).
"""

from __future__ import annotations

import logging

import jax
import numpy as np

import partitioning
from model_zoo.axes import activation_rules
from model_zoo.decoding import DecodeConfig, decode
from model_zoo.scoring import sequence_log_likelihood
from inference.host_rows import global_rows, padded, replicated

logger = logging.getLogger(__name__)


class Inference:
    """Batches texts, pads them to the data-parallel degree, and decodes (`predict`) or scores
    given targets (`score`: log p(target | input), summed over the target's tokens) in one
    jitted call each. `params` may be set later (the train loop sets its own per eval);
    `vocab` reads and writes texts."""

    def __init__(self, mdef, params, config, mesh, rules, decode_config: DecodeConfig | None,
                 vocab=None, max_input_length: int = 512, seed: int = 0):
        self.mdef, self.params, self.config = mdef, params, config
        self.mesh, self.rules = mesh, rules
        self._vocab, self._byte_vocab = vocab, None
        self.decode_config = decode_config or DecodeConfig()
        self.max_input_length = max_input_length
        self.dp = partitioning.data_parallel_degree(self.rules, self.mesh)
        self.seed, self._calls = seed, 0
        cfg = self.decode_config
        self._decode = self._step(lambda p, e, b, n: decode(
            self.mdef.bind(p), e, cfg, jax.random.fold_in(jax.random.key(seed), n), b))
        self._score = self._step(
            lambda p, e, b, t: sequence_log_likelihood(self.mdef.bind(p), e, t, b))

    @property
    def vocab(self):
        if self._vocab is None:
            raise ValueError("no vocabulary given to read and write texts")
        return self._vocab

    @property
    def byte_vocab(self):
        """A hybrid model also reads the bytes of each input; None for the others."""
        if self.config.byte_encoder and self._byte_vocab is None:
            from tasks.vocabularies import byte_vocabulary
            self._byte_vocab = byte_vocabulary()
        return self._byte_vocab

    def _step(self, fn):
        """`fn` jitted with its [batch, ...] outputs kept batch-sharded as computed, then
        replicated (gathered) for every process to read."""
        def sharded(*args):
            return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(
                x, partitioning.batch_sharding(self.rules, self.mesh, x.ndim)), fn(*args))
        return jax.jit(sharded, out_shardings=replicated(self.mesh))

    def _rows(self, rows: np.ndarray | None) -> jax.Array | None:
        """[B, ...] rows (the same on every process) padded to the data-parallel degree, as a
        batch-sharded global array."""
        if rows is None:
            return None
        rows = padded(np.asarray(rows, np.int32), self.dp)
        return global_rows(rows, partitioning.batch_sharding(self.rules, self.mesh, rows.ndim))

    def _run(self, step, *args) -> np.ndarray:
        if self.params is None:
            raise RuntimeError("Predictor.params is not set")
        with jax.set_mesh(self.mesh), activation_rules(
                partitioning.activation_resolver(self.rules, self.mesh)):
            return jax.tree.map(np.asarray, step(self.params, *args))

    def encode_texts(self, texts: list[str], vocab=None, max_length: int | None = None,
                     what: str = "input") -> np.ndarray:
        vocab = vocab or self.vocab
        max_length = max_length or self.max_input_length
        rows = []
        for text in texts:
            ids = vocab.encode(text)
            if len(ids) > max_length - 1:
                logger.warning(f"{what} {text[:40]!r}...: {len(ids)} tokens + EOS, truncated to "
                               f"max_{what}_length={max_length}")
            rows.append(ids[: max_length - 1] + [1])
        width = max(len(r) for r in rows)
        out = np.zeros((len(rows), width), np.int32)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return padded(out, self.dp)

    def predict_tokens(self, encoder_input_tokens: np.ndarray,
                       byte_encoder_input_tokens: np.ndarray | None = None) -> np.ndarray:
        """[B, max_decode_length] ids (up to and including EOS, then 0) for [B, L] inputs;
        on every process, which must all pass the same rows."""
        n = encoder_input_tokens.shape[0]
        self._calls += 1  # a fresh sampling key per call, the same on every process
        calls = global_rows(np.int32(self._calls), replicated(self.mesh))
        out = self._run(self._decode, self._rows(encoder_input_tokens),
                        self._rows(byte_encoder_input_tokens), calls)
        return (out[0] if isinstance(out, tuple) else out)[:n]

    def score_tokens(self, encoder_input_tokens: np.ndarray, decoder_target_tokens: np.ndarray,
                     byte_encoder_input_tokens: np.ndarray | None = None) -> np.ndarray:
        """[B] float32 summed log-likelihood of each row's targets (0 = padding); on every
        process, which must all pass the same rows."""
        n = encoder_input_tokens.shape[0]
        if decoder_target_tokens.shape[0] != n:
            raise ValueError(f"score_tokens: {n} input rows but {decoder_target_tokens.shape[0]} "
                             "target rows")
        return self._run(self._score, self._rows(encoder_input_tokens),
                         self._rows(byte_encoder_input_tokens),
                         self._rows(decoder_target_tokens))[:n]

    def predict(self, texts: list[str]) -> list[str]:
        enc = self.encode_texts(texts)
        byte_enc = self.encode_texts(texts, self.byte_vocab) if self.byte_vocab else None
        preds = []
        for row in self.predict_tokens(enc, byte_enc)[: len(texts)]:
            row = row.tolist()
            row = row[: row.index(1)] if 1 in row else row
            preds.append(self.vocab.decode([t for t in row if t > 0]))
        return preds

    def score(self, texts: list[str], targets: list[str],
              max_target_length: int | None = None) -> np.ndarray:
        """[len(texts)] float32: each target's summed token log-likelihood given its input
        (EOS included), the quantity seqio's score_metric_fns and rank classification use."""
        if len(texts) != len(targets):
            raise ValueError(f"score: {len(texts)} inputs but {len(targets)} targets")
        enc = self.encode_texts(texts)
        byte_enc = self.encode_texts(texts, self.byte_vocab) if self.byte_vocab else None
        tgt = self.encode_texts(targets, max_length=max_target_length or
                                self.decode_config.max_decode_length, what="target")
        return self.score_tokens(enc, tgt, byte_enc)[: len(texts)]
