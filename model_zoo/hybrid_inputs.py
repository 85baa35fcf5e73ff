"""The hybrid's second input (ByT5-style bytes of the same text beside the tokens): its
checks and the encoder positions the decoder attends to, bytes after tokens."""

from __future__ import annotations

import jax.numpy as jnp

from model_zoo.features import check_same_shape, check_tokens


def check_byte_inputs(has_byte_encoder: bool, tokens, segment_ids, byte_tokens,
                      byte_segment_ids, byte_positions) -> None:
    """Byte features exactly when the model has a byte encoder, in shapes that fit."""
    if not has_byte_encoder:
        if byte_tokens is not None:
            raise ValueError("byte_encoder_input_tokens given, but this model has no byte "
                             "encoder (ModelConfig.byte_encoder is None)")
        return
    if byte_tokens is None:
        raise ValueError("this hybrid model (ModelConfig.byte_encoder set) needs "
                         "byte_encoder_input_tokens: the bytes of the same inputs")
    check_tokens("byte_encoder_input_tokens", byte_tokens, tokens.shape[0])
    check_same_shape("byte_encoder_segment_ids", byte_segment_ids,
                     "byte_encoder_input_tokens", byte_tokens)
    check_same_shape("byte_encoder_positions", byte_positions,
                     "byte_encoder_input_tokens", byte_tokens)
    if (segment_ids is None) != (byte_segment_ids is None):
        raise ValueError("packed hybrid inputs need both encoder_segment_ids and "
                         "byte_encoder_segment_ids (or neither)")


def encoder_keys(encoder_input_tokens, encoder_segment_ids=None,
                 byte_encoder_input_tokens=None, byte_encoder_segment_ids=None):
    """(ids, segment ids) of every encoder output position, bytes after tokens: what the
    decoder's cross-attention mask is built from."""
    if byte_encoder_input_tokens is None:
        return encoder_input_tokens, encoder_segment_ids
    keys = jnp.concatenate([encoder_input_tokens, byte_encoder_input_tokens], axis=1)
    if encoder_segment_ids is None:
        return keys, None
    return keys, jnp.concatenate([encoder_segment_ids, byte_encoder_segment_ids], axis=1)
