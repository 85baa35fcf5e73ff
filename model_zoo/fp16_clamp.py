"""Keep T5's residual stream finite in float16, as HF transformers' T5 does.

T5 1.1's feed-forward outputs (and T5 1.0-large's) can exceed float16's range (65504); the
next norm then turns the inf into nan and every step is skipped. In float16, HF clamps the
hidden states after each sub-layer of a block (self-attention, cross-attention,
feed-forward) to +-(max - 1000) when the tensor holds an inf, to +-max otherwise. Here the
clamp is to +-(max - 1000) always: the same values whenever HF's clamp replaces an inf,
elementwise, without HF's whole-tensor test (a cross-device reduction under sharding).
Finite values within 1000 of the maximum are clamped too. Other dtypes pass unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

FLOAT16_LIMIT = float(jnp.finfo(jnp.float16).max) - 1000.0  # 64504


def clamp_float16(x: jax.Array) -> jax.Array:
    """x clamped to +-FLOAT16_LIMIT when it is float16; x itself otherwise."""
    if x.dtype != jnp.float16:
        return x
    return jnp.clip(x, -FLOAT16_LIMIT, FLOAT16_LIMIT)
