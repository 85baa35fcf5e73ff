"""The tasks and mixtures t5pod registers with seqio on import."""

from __future__ import annotations

import functools
import os

import seqio

from tasks import wikispell
from tasks.benchmarks import bbh, mmlu
from tasks.pretraining import corpus, text_files, zipf_corpus
from tasks.flan2022 import flan_collection
from tasks.instruction_tuning import flan_tasks
from tasks import settings_scope
from tasks.hybrid_features import HYBRID_SUFFIX, copy_inputs_to_bytes, with_bytes
from tasks.metrics import accuracy
from tasks.pretraining.span_corruption import prefix_lm, span_corruption
from tasks.text_to_text import format_fields, keep, label_to_text
from tasks.tf_setup import tf
from tasks.vocabularies import (DEMO_SPM, T5_EXTRA_IDS, WIKISPELL_SPM, byte_vocabulary,
                                sentencepiece_vocabulary)

C4 = "c4/en:3.1.0"
BYT5_MEAN_SPAN = 20.0


def default_sentencepiece():
    """T5POD_SENTENCEPIECE_MODEL if set (e.g. T5's cc_all.32000), else the demo model.

    The demo model ships with t5pod; it is loaded lazily, so `tools.train_vocab` can
    regenerate it.
    """
    path = os.environ.get("T5POD_SENTENCEPIECE_MODEL")
    if path:
        return sentencepiece_vocabulary(path)
    return seqio.SentencePieceVocabulary(DEMO_SPM, extra_ids=T5_EXTRA_IDS)


def features(vocabulary) -> dict[str, seqio.Feature]:
    return {"inputs": seqio.Feature(vocabulary, add_eos=True, required=False),
            "targets": seqio.Feature(vocabulary, add_eos=True)}


def _demo_dataset(split: str, shuffle_files: bool = False, seed: int | None = None):
    texts = corpus.split(split)
    ds = tf.data.Dataset.from_tensor_slices({"text": tf.constant(texts)})
    return ds.shuffle(len(texts), seed=seed) if shuffle_files else ds


DEMO_SOURCE = seqio.FunctionDataSource(_demo_dataset, splits=("train", "validation"))
TEXT_SOURCE = text_files.TextFilesSource()
C4_SOURCE = seqio.TfdsDataSource(tfds_name=C4)


def _pretraining(name: str, source, vocabulary, objective) -> None:
    seqio.TaskRegistry.add(
        name, source=source,
        preprocessors=[
            functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
            seqio.preprocessors.tokenize,
            objective,
            seqio.preprocessors.append_eos_after_trim,
        ],
        output_features=features(vocabulary), metric_fns=[])


def _wikispell_dataset(split: str, shuffle_files: bool = False, seed: int | None = None):
    rows = wikispell.examples(split)
    ds = tf.data.Dataset.from_tensor_slices({k: tf.constant([r[k] for r in rows])
                                             for k in ("inputs", "targets", "bucket")})
    return ds.shuffle(len(rows), seed=seed) if shuffle_files else ds


def _wikispell(name: str, inputs_vocab, targets_vocab, hybrid: bool = False) -> None:
    """WikiSpell on `inputs_vocab` ids (and, for a hybrid model, the same word's bytes)."""
    output_features = {"inputs": seqio.Feature(inputs_vocab, add_eos=True),
                       "targets": seqio.Feature(targets_vocab, add_eos=True)}
    if hybrid:
        output_features = with_bytes(output_features)
    seqio.TaskRegistry.add(
        name, source=seqio.FunctionDataSource(_wikispell_dataset, splits=wikispell.SPLITS),
        preprocessors=([copy_inputs_to_bytes] if hybrid else []) + [
            seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
        output_features=output_features, postprocess_fn=wikispell.with_bucket,
        metric_fns=[wikispell.exact_match_by_bucket])


def _zipf():
    return settings_scope.get("zipf_corpus", zipf_corpus.ZipfCorpusConfig)


def _zipf_text_dataset(split: str, shuffle_files: bool = False, seed: int | None = None):
    texts = zipf_corpus.texts(_zipf(), split)
    ds = tf.data.Dataset.from_tensor_slices({"text": tf.constant(texts)})
    return ds.shuffle(len(texts), seed=seed) if shuffle_files else ds


def _zipf_ids_dataset(split: str, shuffle_files: bool = False, seed: int | None = None):
    """The documents already tokenized (subword-sampled) with the WikiSpell SentencePiece."""
    rows = zipf_corpus.sentencepiece_ids(_zipf(), split, WIKISPELL_SPM)
    ids = tf.RaggedTensor.from_row_lengths(
        tf.constant([t for r in rows for t in r], tf.int32), [len(r) for r in rows])
    ds = tf.data.Dataset.from_tensor_slices({"targets": ids})
    return ds.shuffle(len(rows), seed=seed) if shuffle_files else ds


def _span(mean):
    return functools.partial(span_corruption, mean_noise_span_length=mean)


def register() -> None:
    """Register every t5pod task and mixture (idempotent)."""
    if "demo_span_corruption" in seqio.TaskRegistry.names():
        return
    spm, byte = default_sentencepiece(), byte_vocabulary()
    _pretraining("c4_span_corruption", C4_SOURCE, spm, _span(3.0))
    _pretraining("c4_span_corruption_byte", C4_SOURCE, byte, _span(BYT5_MEAN_SPAN))
    _pretraining("demo_span_corruption", DEMO_SOURCE, spm, _span(3.0))
    _pretraining("demo_span_corruption_byte", DEMO_SOURCE, byte, _span(BYT5_MEAN_SPAN))
    _pretraining("demo_prefix_lm", DEMO_SOURCE, spm, prefix_lm)
    _pretraining("text_span_corruption", TEXT_SOURCE, spm, _span(3.0))
    _pretraining("text_span_corruption_byte", TEXT_SOURCE, byte, _span(BYT5_MEAN_SPAN))
    # WikiSpell: char-blind (a SentencePiece model of frequency-weighted words), char-aware
    # (bytes), and hybrid (SentencePiece ids + the same word's bytes).
    wiki_spm = seqio.SentencePieceVocabulary(WIKISPELL_SPM, extra_ids=T5_EXTRA_IDS)
    _wikispell("wikispell_spm", wiki_spm, wiki_spm)
    _wikispell("wikispell_byte", byte, byte)
    _wikispell("wikispell_hybrid", wiki_spm, wiki_spm, hybrid=True)
    # Their pretraining: span corruption of words at their real frequencies
    # (tasks/pretraining/zipf_corpus.py)
    seqio.TaskRegistry.add(
        "wikispell_pretrain_spm",
        source=seqio.FunctionDataSource(_zipf_ids_dataset, splits=zipf_corpus.SPLITS),
        preprocessors=[_span(3.0), seqio.preprocessors.append_eos_after_trim],
        output_features=features(wiki_spm), metric_fns=[])
    _pretraining("wikispell_pretrain_byte",
                 seqio.FunctionDataSource(_zipf_text_dataset, splits=zipf_corpus.SPLITS),
                 byte, _span(BYT5_MEAN_SPAN))
    seqio.MixtureRegistry.add("demo_span_corruption_and_prefix_lm",
                              ["demo_span_corruption", "demo_prefix_lm"], default_rate=1.0)

    seqio.TaskRegistry.add(
        "glue_sst2", source=seqio.TfdsDataSource(tfds_name="glue/sst2:2.0.0"),
        preprocessors=[format_fields("sst2 sentence: {sentence}", ["sentence"]),
                       label_to_text(["negative", "positive"]), keep("inputs", "targets"),
                       seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
        output_features=features(spm), metric_fns=[accuracy])
    seqio.TaskRegistry.add(
        "super_glue_boolq", source=seqio.TfdsDataSource(tfds_name="super_glue/boolq:1.0.2"),
        preprocessors=[format_fields("boolq passage: {passage} question: {question}",
                                     ["passage", "question"]),
                       label_to_text(["False", "True"]), keep("inputs", "targets"),
                       seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
        output_features=features(spm), metric_fns=[accuracy])
    seqio.MixtureRegistry.add("glue_sst2_and_boolq", ["glue_sst2", "super_glue_boolq"],
                              default_rate=1.0)
    # Flan-style instruction tasks (tasks/instruction_tuning/flan_tasks.py) and their mixtures.
    flan_tasks.register(spm)
    # The Flan 2022 collection from its exported files (tasks/flan2022/flan_collection.py).
    flan_collection.register(spm)
    # Benchmarks from local files in their published formats (gin: tasks.mmlu / tasks.bbh),
    # and their hybrid variants (SentencePiece ids + the same inputs' bytes).
    mmlu.register({"": spm, "_byte": byte}, hybrid={HYBRID_SUFFIX: spm})
    bbh.register({"": spm, "_byte": byte}, hybrid={HYBRID_SUFFIX: spm})
