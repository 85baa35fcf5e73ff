"""Attention masks from t5x/seqio features: id 0 is padding, segment ids separate packed examples.

Masks are boolean [batch, 1, q_len, k_len] (True = may attend) and only mask keys, so
rows of padding queries stay finite; their outputs are never read.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _segment_mask(q_segments, k_segments):
    return q_segments[:, None, :, None] == k_segments[:, None, None, :]


def encoder_mask(tokens: jax.Array, segment_ids: jax.Array | None) -> jax.Array:
    """Bidirectional: every non-padding key of the same segment."""
    mask = (tokens > 0)[:, None, None, :]
    if segment_ids is not None:
        mask = mask & _segment_mask(segment_ids, segment_ids)
    return mask


def decoder_mask(length: int, segment_ids: jax.Array | None) -> jax.Array:
    """Causal over row positions (the first decoder input is the pad id 0, so no key mask)."""
    idx = jnp.arange(length)
    mask = (idx[None, :] <= idx[:, None])[None, None]
    if segment_ids is not None:
        mask = mask & _segment_mask(segment_ids, segment_ids)
    return mask


def cross_mask(encoder_tokens: jax.Array, decoder_segment_ids: jax.Array | None,
               encoder_segment_ids: jax.Array | None) -> jax.Array:
    """Decoder queries see the non-padding encoder keys of their own segment."""
    mask = (encoder_tokens > 0)[:, None, None, :]
    if decoder_segment_ids is not None and encoder_segment_ids is not None:
        mask = mask & _segment_mask(decoder_segment_ids, encoder_segment_ids)
    return mask


def default_positions(tokens: jax.Array) -> jax.Array:
    """0..len-1 for every row, shape [1, len] (broadcasts over batch)."""
    return jnp.arange(tokens.shape[1], dtype=jnp.int32)[None, :]
