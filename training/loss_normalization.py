"""t5x's `loss_normalizing_factor`: what a batch's summed token losses are divided by.

- "NUM_REAL_TARGET_TOKENS" (default): the batch's total loss weight, i.e. a per-token mean.
- "NUM_TOTAL_TARGET_TOKENS": every target position, padding included (batch x length).
- "AVERAGE_PER_SEQUENCE": each sequence (each packed segment) gets its own per-token mean,
  and the batch the mean of those over the sequences that carry any weight.
- a positive number: a constant, e.g. Mesh TensorFlow's 233472 (2048 x 114) for fine-tuning.

The factor and the per-token weights are computed from the whole global batch before it
is split into microbatches, so the loss and its grads do not depend on the split.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from fields.choices import require_choice

SPECIAL_FACTORS = ("NUM_REAL_TARGET_TOKENS", "NUM_TOTAL_TARGET_TOKENS", "AVERAGE_PER_SEQUENCE")


def check_factor(value) -> float | str:
    """The factor as stored: one of SPECIAL_FACTORS, or a positive finite float."""
    if isinstance(value, str):
        require_choice("", "loss_normalizing_factor", value, SPECIAL_FACTORS,
                       meaning="or a positive number, e.g. 233472.0")
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value) and value > 0:
            return float(value)
    raise ValueError(f"loss_normalizing_factor={value!r} must be a positive finite number "
                     f"or one of {SPECIAL_FACTORS}")


def target_weights(batch: dict) -> jax.Array:
    """`decoder_loss_weights`, or (target id > 0) when the batch has none, as float32."""
    weights = batch.get("decoder_loss_weights")
    if weights is None:
        weights = batch["decoder_target_tokens"] > 0
    return weights.astype(jnp.float32)


def _sequence_totals(weights: jax.Array, segment_ids: jax.Array | None) -> jax.Array:
    """Each position's sum of weights over its sequence: its row, or its packed segment
    (a run of equal segment ids, as packing writes them)."""
    if segment_ids is None:
        return jnp.broadcast_to(jnp.sum(weights, axis=-1, keepdims=True), weights.shape)
    starts = jnp.concatenate([jnp.ones_like(segment_ids[:, :1], bool),
                              segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    runs = jnp.cumsum(starts, axis=1) - 1  # [B, T] run index in [0, T)

    def row(w, r):
        return jax.ops.segment_sum(w, r, num_segments=w.shape[0])[r]

    return jax.vmap(row)(weights, runs)


def factor_and_weights(factor: float | str, batch: dict) -> tuple[jax.Array, jax.Array]:
    """(divisor, per-token loss weights) for the global `batch`: the objective is
    sum(token_loss * weights) / divisor."""
    weights = target_weights(batch)
    if factor == "NUM_REAL_TARGET_TOKENS":
        return jnp.maximum(jnp.sum(weights), 1.0), weights
    if factor == "NUM_TOTAL_TARGET_TOKENS":
        return jnp.asarray(math.prod(batch["decoder_target_tokens"].shape), jnp.float32), weights
    if factor == "AVERAGE_PER_SEQUENCE":
        totals = _sequence_totals(weights, batch.get("decoder_segment_ids"))
        weights = jnp.where(totals > 0, weights / jnp.where(totals > 0, totals, 1.0), 0.0)
        count = jnp.sum(weights)
        return jnp.where(count > 0, count, 1.0), weights
    return jnp.asarray(check_factor(factor), jnp.float32), weights
