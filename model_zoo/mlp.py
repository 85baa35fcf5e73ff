"""T5 feed-forward block: one `wi` projection per activation (model_zoo/ffn.py), then `wo`."""

from __future__ import annotations

import jax
from flax import nnx

from model_zoo.axes import param
from model_zoo.ffn import feed_forward, projection_names


class MLP(nnx.Module):
    def __init__(self, d_model: int, d_ff: int, activations: tuple[str, ...], dtype,
                 dropout_rate: float, rngs: nnx.Rngs):
        normal = jax.nn.initializers.normal
        for name in projection_names(activations):  # t5x names: wi, or wi_0, wi_1, ...
            setattr(self, name, param(rngs, normal(d_model ** -0.5), (d_model, d_ff),
                                      ("embed", "mlp")))
        self.wo = param(rngs, normal(d_ff ** -0.5), (d_ff, d_model), ("mlp", "embed"))
        self.activations = tuple(activations)
        self.dtype = dtype
        self.dropout_rate = dropout_rate

    def forward(self, x: jax.Array, token_mask=None, *, rng=None, deterministic: bool = True):
        """(outputs, aux): the feed-forward interface shared with moe.MoEFeedForward
        (`token_mask` is for routing; a dense MLP ignores it)."""
        return self(x, rng=rng, deterministic=deterministic), {}

    def __call__(self, x: jax.Array, *, rng=None, deterministic: bool = True) -> jax.Array:
        w = lambda p: p[...].astype(self.dtype)  # noqa: E731
        wi = [w(getattr(self, n)) for n in projection_names(self.activations)]
        return feed_forward(x, wi, w(self.wo), self.activations, ("batch", "length", "mlp"),
                            self.dropout_rate, rng, deterministic)
