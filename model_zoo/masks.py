"""Attention masks from t5x/seqio features: id 0 is padding, segment ids separate packed examples.

Masks are boolean [batch, 1, q_len, k_len] (True = may attend) and only mask keys, so
rows of padding queries stay finite; their outputs are never read. Each comes as an
`AttentionMask`: the dense array, plus what a fused kernel can take instead (key lengths,
causal), so cuDNN need not turn the mask into a [batch, heads, q_len, k_len] bias.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["dense", "key_lengths", "trailing"], meta_fields=["causal"])
@dataclasses.dataclass(frozen=True)
class AttentionMask:
    """`dense` [batch|1, 1, q_len, k_len], and hints equal to it where they are set.

    `causal`: `dense` is exactly the causal mask. `key_lengths` [batch]: the count of
    non-padding keys per row; where `trailing` (a scalar) is true, `dense` is exactly
    "key position < key_lengths", and a kernel may take the lengths instead. Padding in
    the middle (hybrid keys, left padding) leaves `trailing` false.
    """

    dense: jax.Array
    key_lengths: jax.Array | None = None
    trailing: jax.Array | None = None
    causal: bool = False


def _key_padding(tokens: jax.Array) -> AttentionMask:
    keep = tokens > 0
    lengths = keep.sum(axis=-1, dtype=jnp.int32)
    trailing = jnp.all(keep == (jnp.arange(tokens.shape[1])[None, :] < lengths[:, None]))
    return AttentionMask(keep[:, None, None, :], lengths, trailing)


def _segment_mask(q_segments, k_segments):
    return q_segments[:, None, :, None] == k_segments[:, None, None, :]


def encoder_mask(tokens: jax.Array, segment_ids: jax.Array | None) -> AttentionMask:
    """Bidirectional: every non-padding key of the same segment."""
    mask = _key_padding(tokens)
    if segment_ids is None:
        return mask
    return AttentionMask(mask.dense & _segment_mask(segment_ids, segment_ids))


def decoder_mask(length: int, segment_ids: jax.Array | None) -> AttentionMask:
    """Causal over row positions (the first decoder input is the pad id 0, so no key mask)."""
    idx = jnp.arange(length)
    mask = (idx[None, :] <= idx[:, None])[None, None]
    if segment_ids is None:
        return AttentionMask(mask, causal=True)
    return AttentionMask(mask & _segment_mask(segment_ids, segment_ids))


def cross_mask(encoder_tokens: jax.Array, decoder_segment_ids: jax.Array | None,
               encoder_segment_ids: jax.Array | None) -> AttentionMask:
    """Decoder queries see the non-padding encoder keys of their own segment."""
    mask = _key_padding(encoder_tokens)
    if decoder_segment_ids is None or encoder_segment_ids is None:
        return mask
    return AttentionMask(mask.dense & _segment_mask(decoder_segment_ids, encoder_segment_ids))


def default_positions(tokens: jax.Array) -> jax.Array:
    """0..len-1 for every row, shape [1, len] (broadcasts over batch)."""
    return jnp.arange(tokens.shape[1], dtype=jnp.int32)[None, :]
