"""T5 feed-forward block: relu (T5 1.0) or gated-GELU (T5 1.1, Shazeer 2020)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from model_zoo.axes import constrain, param
from model_zoo.dropout import dropout


class MLP(nnx.Module):
    def __init__(self, d_model: int, d_ff: int, gated: bool, dtype, dropout_rate: float,
                 rngs: nnx.Rngs):
        normal = jax.nn.initializers.normal
        if gated:  # wi_0 goes through the GELU, wi_1 is the linear gate (t5x names)
            self.wi_0 = param(rngs, normal(d_model ** -0.5), (d_model, d_ff), ("embed", "mlp"))
            self.wi_1 = param(rngs, normal(d_model ** -0.5), (d_model, d_ff), ("embed", "mlp"))
        else:
            self.wi = param(rngs, normal(d_model ** -0.5), (d_model, d_ff), ("embed", "mlp"))
        self.wo = param(rngs, normal(d_ff ** -0.5), (d_ff, d_model), ("mlp", "embed"))
        self.gated = gated
        self.dtype = dtype
        self.dropout_rate = dropout_rate

    def forward(self, x: jax.Array, token_mask=None, *, rng=None, deterministic: bool = True):
        """(outputs, aux): the feed-forward interface shared with moe.MoEFeedForward
        (`token_mask` is for routing; a dense MLP ignores it)."""
        return self(x, rng=rng, deterministic=deterministic), {}

    def __call__(self, x: jax.Array, *, rng=None, deterministic: bool = True) -> jax.Array:
        if self.gated:
            h0 = jnp.einsum("btd,df->btf", x, self.wi_0[...].astype(self.dtype))
            h1 = jnp.einsum("btd,df->btf", x, self.wi_1[...].astype(self.dtype))
            h = jax.nn.gelu(h0, approximate=True) * h1
        else:
            h = jax.nn.relu(jnp.einsum("btd,df->btf", x, self.wi[...].astype(self.dtype)))
        h = constrain(h, ("batch", "length", "mlp"))
        h = dropout(h, self.dropout_rate, rng, deterministic)
        return jnp.einsum("btf,fd->btd", h, self.wo[...].astype(self.dtype))
