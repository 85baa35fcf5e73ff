"""Vocabularies: ByT5 bytes, and SentencePiece with T5's 100 extra ids (sentinels)."""

from __future__ import annotations

import importlib.resources

import seqio

from fields import paths

from tasks import tf_setup  # noqa: F401  (TF set up before seqio uses it)

# ByT5: pad 0, eos 1, unk 2, byte b -> b + 3; 125 extra ids pad the vocab to 384, and
# span-corruption sentinels count down from its top (383, 382, ...).
BYTE_EXTRA_IDS = 125
T5_EXTRA_IDS = 100
DATA = importlib.resources.files("tasks") / "data"  # package data (pyproject.toml)
DEMO_SPM = str(DATA / "demo_spm.model")
# Regenerate with: python -m tools.train_vocab --demo --out tasks/data/demo_spm
DEMO_SPM_VOCAB_SIZE = 2000
# Char-blind WikiSpell baseline; regenerate with:
#   python -m tools.train_vocab --wikispell --out tasks/data/wikispell_spm
WIKISPELL_SPM = str(DATA / "wikispell_spm.model")
WIKISPELL_SPM_VOCAB_SIZE = 4000


def byte_vocabulary() -> seqio.ByteVocabulary:
    return seqio.ByteVocabulary(extra_ids=BYTE_EXTRA_IDS)


def sentencepiece_vocabulary(path: str, extra_ids: int = T5_EXTRA_IDS):
    """A SentencePiece model file: local, or on gs:// / s3:// (read from a local copy)."""
    if not paths.isfile(path):
        raise FileNotFoundError(f"SentencePiece model {path} does not exist; train one with "
                                "`python -m tools.train_vocab --input FILES --out PREFIX`")
    return seqio.SentencePieceVocabulary(paths.downloaded(path), extra_ids=extra_ids)
