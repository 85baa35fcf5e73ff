"""Train a T5-style SentencePiece model (pad 0, eos 1, unk 2, no bos) from text."""

from __future__ import annotations

import os
from typing import Iterable

import sentencepiece as spm


def train_sentencepiece(texts: Iterable[str], model_prefix: str, vocab_size: int = 2000,
                        model_type: str = "unigram", character_coverage: float = 1.0) -> str:
    """Writes `model_prefix.model`/.vocab and returns the .model path. Deterministic (1 thread)."""
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("cannot train a SentencePiece model on an empty corpus")
    os.makedirs(os.path.dirname(os.path.abspath(model_prefix)), exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=model_prefix, vocab_size=vocab_size,
        model_type=model_type, character_coverage=character_coverage,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1, shuffle_input_sentence=False,
        input_sentence_size=0, byte_fallback=True, minloglevel=2)
    return model_prefix + ".model"
