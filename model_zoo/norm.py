"""T5 layer norm: RMS scaling only (no mean subtraction, no bias), computed in float32.

`make_norm` builds the norm a ModelConfig names (`norm`: "rms" here, "kl" model_zoo.kl_norm).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from model_zoo.axes import param
from model_zoo.config import ModelConfig
from model_zoo.kl_norm import KLNorm


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, epsilon: float, dtype, rngs: nnx.Rngs):
        self.scale = param(rngs, jax.nn.initializers.ones, (dim,), ("embed",))
        self.epsilon = epsilon
        self.dtype = dtype

    def forward(self, x: jax.Array, *, rng=None, deterministic: bool = True):
        """(outputs, None): the interface of kl_norm.KLNorm, which also gives a KL per token."""
        return self(x), None

    def __call__(self, x: jax.Array, *, rng=None, deterministic: bool = True) -> jax.Array:
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
        return (x32 * self.scale[...]).astype(self.dtype)


def make_norm(cfg: ModelConfig, rngs: nnx.Rngs) -> RMSNorm | KLNorm:
    """The d_model-wide norm `cfg.norm` names."""
    if cfg.norm == "kl":
        return KLNorm(cfg.d_model, cfg.layer_norm_epsilon, cfg.compute_dtype,
                      cfg.kl_norm_init_log_variance, rngs)
    return RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, cfg.compute_dtype, rngs)


def token_mean(per_token: jax.Array, weights: jax.Array | None) -> jax.Array:
    """Mean of a per-token value [batch, length] over the real tokens (`weights` > 0)."""
    if weights is None:
        return jnp.mean(per_token)
    weights = weights.astype(jnp.float32)
    return jnp.sum(per_token * weights) / jnp.maximum(jnp.sum(weights), 1.0)
