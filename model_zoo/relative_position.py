"""T5 relative position bias: log-spaced buckets of (key - query) distance, one scalar per head."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from model_zoo.axes import param


def relative_position_bucket(relative_position: jax.Array, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> jax.Array:
    """Bucket ids for `relative_position = key_pos - query_pos` (Raffel et al., sec. 2.1).

    Half the buckets hold exact small distances; the rest are log-spaced up to
    `max_distance`, beyond which all distances share the last bucket. Bidirectional
    buckets split the range by sign; causal ones only see the past.
    """
    buckets = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).astype(relative_position.dtype) * num_buckets
        distance = jnp.abs(relative_position)
    else:
        distance = jnp.maximum(-relative_position, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    scaled = (jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
              / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    if_large = jnp.minimum(max_exact + scaled.astype(relative_position.dtype), num_buckets - 1)
    return buckets + jnp.where(is_small, distance, if_large)


class RelativePositionBias(nnx.Module):
    def __init__(self, num_buckets: int, max_distance: int, num_heads: int,
                 bidirectional: bool, init_scale: float, rngs: nnx.Rngs):
        self.embedding = param(rngs, jax.nn.initializers.normal(init_scale),
                               (num_heads, num_buckets), ("heads", "relpos_buckets"))
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional

    def __call__(self, query_positions: jax.Array, key_positions: jax.Array) -> jax.Array:
        """Bias [batch, heads, q_len, k_len] in float32 from int positions [batch, len]."""
        relative = key_positions[:, None, :] - query_positions[:, :, None]
        buckets = relative_position_bucket(relative.astype(jnp.int32), self.bidirectional,
                                           self.num_buckets, self.max_distance)
        bias = jnp.take(self.embedding[...], buckets, axis=1)  # [heads, batch, q, k]
        return jnp.transpose(bias, (1, 0, 2, 3)).astype(jnp.float32)
