"""Feature converter for hybrid token+byte encoder-decoders.

Like seqio's EncDecFeatureConverter, plus `byte_inputs` (the bytes of the same input text)
-> `byte_encoder_input_tokens`. When packing, seqio packs all three features together, so
example i has segment id i in the token inputs, the byte inputs and the targets alike.
"""

from __future__ import annotations

import seqio

from tasks.tf_setup import tf

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
