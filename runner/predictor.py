"""Decode texts with a trained model: a t5pod model_dir (its task gives the vocabulary), an
HF T5 directory or a t5x checkpoint (with a SentencePiece model or bytes)."""

from __future__ import annotations

import sys

import jax
import numpy as np

import partitioning
from model_zoo.axes import activation_rules
from model_zoo.decoding import DecodeConfig, decode
from model_zoo.scoring import sequence_log_likelihood
from partitioning.mesh_spec import devices_for, mesh_config
from runner import trained_model


def vocabulary_for(task: str | None, vocab: str | None, byte: bool):
    if byte:
        from tasks.vocabularies import byte_vocabulary
        return byte_vocabulary()
    if vocab:
        from tasks.vocabularies import sentencepiece_vocabulary
        return sentencepiece_vocabulary(vocab)
    if task:
        from tasks.feeding import lookup
        return lookup(task).output_features["inputs"].vocabulary
    raise ValueError("no vocabulary: this model_dir names no task; pass --vocab or --byte")


class Predictor:
    """Batches texts, pads them to the data-parallel degree, and decodes (`predict`) or scores
    given targets (`score`: log p(target | input), summed over the target's tokens) in one
    jitted call each."""

    def __init__(self, model_dir: str, mesh_spec: str = "data=1", rules: str = "data_parallel",
                 decode_config: DecodeConfig | None = None, vocab=None, byte=False,
                 max_input_length: int = 512, seed: int = 0, model=None):
        """`model`: the ModelConfig a t5x checkpoint is read as (trained_model.load)."""
        mesh = mesh_config(mesh_spec)
        self.mesh = partitioning.make_mesh(mesh, devices=devices_for(mesh))
        self.rules = partitioning.rule_set(rules)
        self.mdef, self.params, self.config, task = trained_model.load(
            model_dir, self.mesh, self.rules, model=model)
        self.vocab = vocabulary_for(task, vocab, byte)
        # a hybrid model also reads the bytes of each input
        self.byte_vocab = (vocabulary_for(None, None, True) if self.config.byte_encoder
                           else None)
        self.decode_config = decode_config or DecodeConfig()
        self.max_input_length = max_input_length
        self.dp = partitioning.data_parallel_degree(self.rules, self.mesh)
        self.rng = jax.random.key(seed)
        cfg = self.decode_config
        self._decode = jax.jit(lambda p, e, r, b: decode(self.mdef.bind(p), e, cfg, r, b))
        self._score = jax.jit(
            lambda p, e, t, b: sequence_log_likelihood(self.mdef.bind(p), e, t, b))

    def encode_texts(self, texts: list[str], vocab=None, max_length: int | None = None,
                     what: str = "input") -> np.ndarray:
        vocab = vocab or self.vocab
        max_length = max_length or self.max_input_length
        rows = []
        for text in texts:
            ids = vocab.encode(text)
            if len(ids) > max_length - 1:
                print(f"{what} {text[:40]!r}...: {len(ids)} tokens + EOS, truncated to "
                      f"max_{what}_length={max_length}", file=sys.stderr)
            rows.append(ids[: max_length - 1] + [1])
        width = max(len(r) for r in rows)
        batch = -(-len(rows) // self.dp) * self.dp
        out = np.zeros((batch, width), np.int32)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out

    def _padded(self, rows: np.ndarray) -> np.ndarray:
        batch = -(-rows.shape[0] // self.dp) * self.dp
        return np.pad(rows, ((0, batch - rows.shape[0]), (0, 0)))

    def predict_tokens(self, encoder_input_tokens: np.ndarray,
                       byte_encoder_input_tokens: np.ndarray | None = None) -> np.ndarray:
        """[B, max_decode_length] ids (up to and including EOS, then 0) for [B, L] inputs."""
        n = encoder_input_tokens.shape[0]
        byte_enc = (None if byte_encoder_input_tokens is None
                    else self._padded(byte_encoder_input_tokens))
        self.rng, key = jax.random.split(self.rng)
        with jax.set_mesh(self.mesh), activation_rules(
                partitioning.activation_resolver(self.rules, self.mesh)):
            out = self._decode(self.params, self._padded(encoder_input_tokens), key, byte_enc)
        return np.asarray(out[0] if isinstance(out, tuple) else out)[:n]

    def score_tokens(self, encoder_input_tokens: np.ndarray, decoder_target_tokens: np.ndarray,
                     byte_encoder_input_tokens: np.ndarray | None = None) -> np.ndarray:
        """[B] float32 summed log-likelihood of each row's targets (0 = padding)."""
        n = encoder_input_tokens.shape[0]
        byte_enc = (None if byte_encoder_input_tokens is None
                    else self._padded(byte_encoder_input_tokens))
        with jax.set_mesh(self.mesh), activation_rules(
                partitioning.activation_resolver(self.rules, self.mesh)):
            out = self._score(self.params, self._padded(encoder_input_tokens),
                              self._padded(decoder_target_tokens), byte_enc)
        return np.asarray(out)[:n]

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
