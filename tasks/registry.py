"""The tasks and mixtures t5pod registers with seqio on import."""

from __future__ import annotations

import functools
import os

import seqio

from tasks import corpus, text_files
from tasks.metrics import accuracy
from tasks.span_corruption import prefix_lm, span_corruption
from tasks.text_to_text import format_fields, keep, label_to_text
from tasks.tf_setup import tf
from tasks.vocabularies import (DEMO_SPM, T5_EXTRA_IDS, byte_vocabulary,
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
TEXT_SOURCE = seqio.FunctionDataSource(text_files.text_dataset, splits=("train", "validation"))
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
