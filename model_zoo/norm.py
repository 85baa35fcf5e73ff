"""T5 layer norm: RMS scaling only (no mean subtraction, no bias), computed in float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from model_zoo.axes import param


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, epsilon: float, dtype, rngs: nnx.Rngs):
        self.scale = param(rngs, jax.nn.initializers.ones, (dim,), ("embed",))
        self.epsilon = epsilon
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
        return (x32 * self.scale[...]).astype(self.dtype)
