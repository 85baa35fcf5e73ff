"""Feature converter for hybrid token+byte encoder-decoders.

Like seqio's EncDecFeatureConverter, plus `byte_inputs` (the bytes of the same input text)
-> `byte_encoder_input_tokens`. When packing, seqio packs all three features together, so
example i has segment id i in the token inputs, the byte inputs and the targets alike.

A task's hybrid variant is named with HYBRID_SUFFIX (wikispell_hybrid, mmlu_zero_shot_hybrid,
bbh_cot_hybrid): the token ids of its inputs plus `byte_inputs`, the same text as bytes.
`mismatch` is the one rule every feed, run and evaluator checks: task, model and lengths
agree on `byte_inputs`.
"""

from __future__ import annotations

import seqio

from tasks.tf_setup import tf
from tasks.vocabularies import byte_vocabulary

HYBRID_SUFFIX = "_hybrid"
_SPEC = seqio.FeatureConverter.FeatureSpec


class HybridEncDecFeatureConverter(seqio.EncDecFeatureConverter):
    TASK_FEATURES = {**seqio.EncDecFeatureConverter.TASK_FEATURES,
                     "byte_inputs": _SPEC(dtype=tf.int32)}
    MODEL_FEATURES = {**seqio.EncDecFeatureConverter.MODEL_FEATURES,
                      "byte_encoder_input_tokens": _SPEC(dtype=tf.int32)}
    PACKING_FEATURE_DTYPES = {**seqio.EncDecFeatureConverter.PACKING_FEATURE_DTYPES,
                              "byte_encoder_segment_ids": tf.int32,
                              "byte_encoder_positions": tf.int32}

    def _convert_example(self, features):
        out = dict(super()._convert_example(features))
        out["byte_encoder_input_tokens"] = features["byte_inputs"]
        if self.pack:
            out["byte_encoder_segment_ids"] = features["byte_inputs_segment_ids"]
            out["byte_encoder_positions"] = features["byte_inputs_positions"]
        return out

    def get_model_feature_lengths(self, task_feature_lengths):
        lengths = dict(super().get_model_feature_lengths(task_feature_lengths))
        byte_length = task_feature_lengths["byte_inputs"]
        lengths["byte_encoder_input_tokens"] = byte_length
        if self.pack:
            lengths["byte_encoder_segment_ids"] = byte_length
            lengths["byte_encoder_positions"] = byte_length
        return lengths


@seqio.map_over_dataset
def copy_inputs_to_bytes(example):
    """seqio preprocessor (before `tokenize`): `byte_inputs` = the text of `inputs`."""
    return {**example, "byte_inputs": example["inputs"]}


def with_bytes(features: dict[str, seqio.Feature]) -> dict[str, seqio.Feature]:
    """A task's output features plus `byte_inputs` (ByT5 bytes, EOS appended)."""
    return {**features, "byte_inputs": seqio.Feature(byte_vocabulary(), add_eos=True)}


def variants(vocabularies: dict, hybrid: dict | None, features_of):
    """(name suffix, output features, preprocessors to run before `tokenize`) for each
    vocabulary (suffix -> vocabulary) and, with `byte_inputs` added, each of `hybrid`.
    `features_of(vocabulary)` gives a task's plain output features."""
    out = [(s, features_of(v), []) for s, v in vocabularies.items()]
    out += [(s, with_bytes(features_of(v)), [copy_inputs_to_bytes])
            for s, v in (hybrid or {}).items()]
    return out


def variant(name: str, hybrid: bool) -> str:
    """Which registered variant(s) of task or mixture `name` suit a hybrid model (`hybrid`)
    or a plain one, for an error message."""
    base = name.removesuffix(HYBRID_SUFFIX).removesuffix("_byte")
    names = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
    found = [n for n in ([base + HYBRID_SUFFIX] if hybrid else [base, base + "_byte"])
             if n in names]
    if found:
        return " or ".join(repr(n) for n in found)
    return (f"a task with byte_inputs (a {HYBRID_SUFFIX!r} variant)" if hybrid
            else "a task without byte_inputs")


def mismatch(name: str, provider, byte_encoder: bool | None = None,
             lengths: dict | None = None) -> str | None:
    """The one rule of hybrid inputs: task or mixture `name` (its seqio `provider`), the
    model (`byte_encoder`: whether ModelConfig.byte_encoder is set; None: no model to check)
    and `lengths` (task_feature_lengths; None: none given) agree on `byte_inputs`. None
    where they do, else the error: what each has and what to change."""
    hybrid = is_hybrid(provider)
    model_wrong = byte_encoder is not None and byte_encoder != hybrid
    lengths_wrong = lengths is not None and ("byte_inputs" in lengths) != hybrid
    if not (model_wrong or lengths_wrong):
        return None
    agree, conflicts, change = [], [], []
    if byte_encoder is not None:
        (conflicts if model_wrong else agree).append(
            "the model reads them (ModelConfig.byte_encoder set)" if byte_encoder
            else "the model has no byte encoder (ModelConfig.byte_encoder=None)")
    if lengths is not None:
        (conflicts if lengths_wrong else agree).append(
            f"task_feature_lengths={dict(lengths)} " + ("gives 'byte_inputs'"
                                                        if "byte_inputs" in lengths
                                                        else "has no 'byte_inputs' length"))
    if model_wrong:
        lengths_too = "" if lengths is None or lengths_wrong else (
            " with a 'byte_inputs' length" if byte_encoder else
            " without 'byte_inputs' in task_feature_lengths")
        other_model = ("a model without a byte encoder" if byte_encoder
                       else "a model with a byte_encoder")
        if lengths_wrong:
            other_model += (" and a 'byte_inputs' length" if hybrid
                            else " and no 'byte_inputs' length")
        change.append(f"use {variant(name, byte_encoder)} instead{lengths_too}, or "
                      f"{other_model}")
    else:
        change.append("add a 'byte_inputs' length to task_feature_lengths (the inputs as "
                      "bytes)" if hybrid else "drop 'byte_inputs' from task_feature_lengths")
    has = "provides byte_inputs (a hybrid task)" if hybrid else "has no byte_inputs"
    return (f"task {name!r} {has}" + "".join(f" and {a}" for a in agree) + ", but "
            + " and ".join(conflicts) + "; " + "; ".join(change))


def is_hybrid(provider) -> bool:
    """Whether a task (or every task of a mixture) provides `byte_inputs`."""
    tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
    flags = {"byte_inputs" in t.output_features for t in tasks}
    if len(flags) > 1:
        raise ValueError(f"mixture {provider.name!r} mixes hybrid tasks (with byte_inputs) "
                         "and plain ones; a hybrid model needs byte_inputs from every task")
    return flags.pop()


def converter(provider, pack: bool) -> seqio.FeatureConverter:
    if is_hybrid(provider):
        return HybridEncDecFeatureConverter(pack=pack)
    return seqio.EncDecFeatureConverter(pack=pack)
