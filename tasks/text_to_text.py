"""Helpers that turn dataset records into T5's text-to-text form."""

from __future__ import annotations

from typing import Sequence

import seqio

from tasks.tf_setup import tf


def format_fields(template: str, fields: Sequence[str]):
    """A seqio preprocessor: `inputs` = template filled with the string `fields`.

    The template uses `{name}` for each field, e.g. 'sst2 sentence: {sentence}'.
    """
    @seqio.map_over_dataset
    def fn(example):
        parts = template
        pieces, rest = [], parts
        for name in fields:
            head, _, rest = rest.partition("{" + name + "}")
            pieces += [tf.constant(head), example[name]]
        pieces.append(tf.constant(rest))
        return {**example, "inputs": tf.strings.join(pieces)}
    return fn


def label_to_text(label_names: Sequence[str], key: str = "label"):
    """A seqio preprocessor: `targets` = the name of the integer label."""
    names = tf.constant(list(label_names))

    @seqio.map_over_dataset
    def fn(example):
        return {**example, "targets": tf.gather(names, tf.cast(example[key], tf.int32))}
    return fn


def keep(*keys: str):
    """A seqio preprocessor that keeps only `keys`."""
    @seqio.map_over_dataset
    def fn(example):
        return {k: example[k] for k in keys}
    return fn
