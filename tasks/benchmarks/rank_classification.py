"""Multiple choice by rank classification: score every option, the most likely one wins.

seqio 0.0.20 ships neither T5's `rank_classification` preprocessor nor its metric, so here
are equivalents with the same contract. An example {inputs, options, answer, idx} becomes one
example per option (`expand_options`), each carrying `idx` = [example, option], `is_correct`
and `weight`; a model's score mode gives each the summed log-likelihood of its option; the
metric groups the rows by example and takes the argmax, optionally of the log-likelihood
divided by the option's length in target tokens (EOS included), as T5's
`normalize_by_target_length` does.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import seqio

from tasks.tf_setup import tf


def expand_options(dataset):
    """seqio preprocessor: {inputs, options [n], answer, idx} -> n examples {inputs, targets
    (one option), idx [2], is_correct, weight}."""

    def per_option(example):
        n = tf.shape(example["options"])[0]
        return tf.data.Dataset.from_tensor_slices({
            "inputs": tf.fill([n], example["inputs"]),
            "targets": example["options"],
            "idx": tf.stack([tf.fill([n], tf.cast(example["idx"], tf.int32)),
                             tf.range(n, dtype=tf.int32)], axis=1),
            "is_correct": tf.equal(tf.range(n, dtype=tf.int64),
                                   tf.cast(example["answer"], tf.int64)),
            "weight": tf.ones([n], tf.float32),
        })

    return dataset.flat_map(per_option)


def postprocess(output, example=None, is_target: bool = False):
    """seqio postprocessor: a target becomes (idx, is_correct, weight, target length), the
    form the metric groups by; a score passes through."""
    if not is_target:
        return output
    return (tuple(int(i) for i in example["idx"]), bool(example["is_correct"]),
            float(example.get("weight", 1.0)), len(example["targets"]))


def rank_predictions(targets: Sequence[tuple], scores: Sequence[float],
                     normalize_by_target_length: bool = False) -> dict[int, tuple[int, bool]]:
    """{example index: (option index of the highest score, whether it is correct)}."""
    if len(targets) != len(scores):
        raise ValueError(f"{len(targets)} rank-classification targets but {len(scores)} scores")
    rows = sorted(zip(targets, scores, strict=True), key=lambda r: tuple(r[0][0]))
    out = {}
    for example, group in itertools.groupby(rows, key=lambda r: r[0][0][0]):
        group = list(group)
        values = [s / t[3] if normalize_by_target_length else s for t, s in group]
        best = group[int(np.argmax(values))][0]
        out[int(example)] = (int(best[0][1]), bool(best[1]))
    return out


def _accuracy(targets, scores, normalize: bool) -> float:
    weights = {t[0][0]: t[2] for t in targets}
    picked = rank_predictions(targets, scores, normalize)
    total = sum(weights[i] for i in picked)
    return 100.0 * sum(weights[i] * ok for i, (_, ok) in picked.items()) / max(total, 1e-9)


def accuracy(targets, scores) -> dict[str, float]:
    """Score metric: % of examples whose most likely option is a correct one."""
    return {"accuracy": _accuracy(targets, scores, False)}


def accuracy_length_normalized(targets, scores) -> dict[str, float]:
    """Score metric: the same, ranking log-likelihood per target token."""
    return {"accuracy_length_normalized": _accuracy(targets, scores, True)}


METRICS = [accuracy, accuracy_length_normalized]


def features(vocabulary) -> dict[str, seqio.Feature]:
    return {"inputs": seqio.Feature(vocabulary, add_eos=True),
            "targets": seqio.Feature(vocabulary, add_eos=True)}
