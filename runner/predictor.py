"""Decode texts with a trained model: a t5pod model_dir (its task gives the vocabulary), an
HF T5 directory or a t5x checkpoint (with a SentencePiece model or bytes).

On one process or many: params are sharded on the mesh by the rules as in training, every
process passes the same global rows, each places only its devices' slices, and every
process gets the whole result (runner/host_rows.py)."""

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
from runner.host_rows import global_rows, padded, replicated


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
    jitted call each, on the mesh `mesh_spec` (x `dcn` across hosts or slices)."""

    def __init__(self, model_dir: str, mesh_spec: str = "data=1", rules: str = "data_parallel",
                 decode_config: DecodeConfig | None = None, vocab=None, byte=False,
                 max_input_length: int = 512, seed: int = 0, model=None, dcn: str = ""):
        """`model`: the ModelConfig a t5x checkpoint is read as (trained_model.load). The
        vocabulary is read when first used (`.vocab`)."""
        mesh = mesh_config(mesh_spec, dcn)
        mesh = partitioning.make_mesh(mesh, devices=devices_for(mesh))
        rules = partitioning.rule_set(rules)
        mdef, params, config, task = trained_model.load(model_dir, mesh, rules, model=model)
        if not (task or vocab or byte):
            vocabulary_for(None, None, False)  # the error: no vocabulary
        self._setup(mdef, params, config, mesh, rules, decode_config, max_input_length, seed)
        self._vocab_from = (task, vocab, byte)

    @classmethod
    def of_params(cls, mdef, params, config, mesh, rules, decode_config: DecodeConfig,
                  vocab=None, max_input_length: int = 512, seed: int = 0) -> "Predictor":
        """A Predictor over params already on `mesh` (e.g. a train loop's; `params` may be
        set later, as the loop's periodic inference eval does)."""
        self = cls.__new__(cls)
        self._setup(mdef, params, config, mesh, rules, decode_config, max_input_length, seed)
        self._vocab_from = (None, None, False)
        self._vocab = vocab
        return self

    def _setup(self, mdef, params, config, mesh, rules, decode_config, max_input_length, seed):
        self.mdef, self.params, self.config = mdef, params, config
        self.mesh, self.rules = mesh, rules
        self._vocab = self._byte_vocab = None
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
            self._vocab = vocabulary_for(*self._vocab_from)
        return self._vocab

    @property
    def byte_vocab(self):
        """A hybrid model also reads the bytes of each input; None for the others."""
        if self.config.byte_encoder and self._byte_vocab is None:
            self._byte_vocab = vocabulary_for(None, None, True)
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
                print(f"{what} {text[:40]!r}...: {len(ids)} tokens + EOS, truncated to "
                      f"max_{what}_length={max_length}", file=sys.stderr)
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
