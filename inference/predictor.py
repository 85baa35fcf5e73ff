"""Decode texts with a trained model: a t5pod model_dir (its task gives the vocabulary), an
HF T5 directory or a t5x checkpoint (with a SentencePiece model or bytes).

On one process or many, through inference.core.Inference (sharded as in training, the
same global rows on every process, the whole result on every process)."""

from __future__ import annotations

import partitioning
from model_zoo.decoding import DecodeConfig
from partitioning.mesh_spec import devices_for, mesh_config
from training.checkpoints import loader
from inference.core import Inference


def vocabulary_for(task: str | None, vocab: str | None, byte: bool):
    if byte:
        from tasks.vocabularies import byte_vocabulary
        return byte_vocabulary()
    if vocab:
        from tasks.vocabularies import sentencepiece_vocabulary
        return sentencepiece_vocabulary(vocab)
    if task:
        from tasks.task_lookup import lookup
        return lookup(task).output_features["inputs"].vocabulary
    raise ValueError("no vocabulary: this model_dir names no task; pass --vocab or --byte")


class Predictor(Inference):
    """Inference with a trained model loaded from `model_dir` onto the mesh `mesh_spec`
    (x `dcn` across hosts or slices)."""

    def __init__(self, model_dir: str, mesh_spec: str = "data=1", rules: str = "data_parallel",
                 decode_config: DecodeConfig | None = None, vocab=None, byte=False,
                 max_input_length: int = 512, seed: int = 0, model=None, dcn: str = "",
                 branch: str | None = None):
        """`model`: the ModelConfig a t5x checkpoint is read as (loader.load). The
        vocabulary is read when first used (`.vocab`). `branch`: a TreeDNN tree's branch,
        served as its plain T5 (its trunk and that branch)."""
        mesh = mesh_config(mesh_spec, dcn)
        mesh = partitioning.make_mesh(mesh, devices=devices_for(mesh))
        rules = partitioning.rule_set(rules)
        mdef, params, config, task = loader.load(model_dir, mesh, rules, model=model,
                                                 branch=branch)
        if not (task or vocab or byte):
            vocabulary_for(None, None, False)  # the error: no vocabulary
        super().__init__(mdef, params, config, mesh, rules, decode_config,
                         max_input_length=max_input_length, seed=seed)
        self._vocab_from = (task, vocab, byte)

    @property
    def vocab(self):
        if self._vocab is None:
            self._vocab = vocabulary_for(*self._vocab_from)
        return self._vocab
