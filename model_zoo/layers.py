"""One T5 encoder layer and one decoder layer: pre-norm residual blocks.

In float16 the residual stream is clamped after every sub-layer (model_zoo.fp16_clamp).
"""

from __future__ import annotations

import jax
from flax import nnx

from model_zoo.attention import MultiHeadAttention
from model_zoo.config import ModelConfig
from model_zoo.dropout import dropout, fold
from model_zoo.fp16_clamp import clamp_float16
from model_zoo.mlp import MLP
from model_zoo.moe import MoEFeedForward
from model_zoo.norm import RMSNorm


def _residual(x: jax.Array, h: jax.Array) -> jax.Array:
    return clamp_float16(x + h)


def _norm(cfg: ModelConfig, rngs: nnx.Rngs) -> RMSNorm:
    return RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, cfg.compute_dtype, rngs)


def _attention(cfg: ModelConfig, rngs: nnx.Rngs) -> MultiHeadAttention:
    return MultiHeadAttention(cfg.d_model, cfg.num_heads, cfg.d_kv, cfg.compute_dtype,
                              cfg.attention_impl, cfg.dropout_rate, rngs)


def _mlp(cfg: ModelConfig, rngs: nnx.Rngs, sparse: bool = False, side: str = "encoder"):
    if sparse:
        return MoEFeedForward(cfg, cfg.moe.routing(side), rngs)
    return MLP(cfg.d_model, cfg.d_ff, cfg.gated, cfg.compute_dtype, cfg.dropout_rate, rngs)


class EncoderLayer(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, sparse: bool = False):
        self.pre_attention_norm = _norm(cfg, rngs)
        self.attention = _attention(cfg, rngs)
        self.pre_mlp_norm = _norm(cfg, rngs)
        self.mlp = _mlp(cfg, rngs, sparse, "encoder")
        self.dropout_rate = cfg.dropout_rate

    def __call__(self, x: jax.Array, bias, mask, *, rng=None, deterministic=True,
                 with_aux=False, token_mask=None):
        rate = self.dropout_rate
        h = self.pre_attention_norm(x)
        h = self.attention(h, h, bias, mask, rng=fold(rng, 0), deterministic=deterministic)
        x = _residual(x, dropout(h, rate, fold(rng, 1), deterministic))
        h, aux = self.mlp.forward(self.pre_mlp_norm(x), token_mask, rng=fold(rng, 2),
                                  deterministic=deterministic)
        x = _residual(x, dropout(h, rate, fold(rng, 3), deterministic))
        return (x, aux) if with_aux else x


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, sparse: bool = False):
        self.pre_self_attention_norm = _norm(cfg, rngs)
        self.self_attention = _attention(cfg, rngs)
        self.pre_cross_attention_norm = _norm(cfg, rngs)
        self.cross_attention = _attention(cfg, rngs)
        self.pre_mlp_norm = _norm(cfg, rngs)
        self.mlp = _mlp(cfg, rngs, sparse, "decoder")
        self.dropout_rate = cfg.dropout_rate

    def __call__(self, x: jax.Array, bias, mask, encoded, cross_mask, *, rng=None,
                 deterministic=True, with_aux=False, token_mask=None):
        rate = self.dropout_rate
        h = self.pre_self_attention_norm(x)
        h = self.self_attention(h, h, bias, mask, rng=fold(rng, 0), deterministic=deterministic)
        x = _residual(x, dropout(h, rate, fold(rng, 1), deterministic))
        h = self.pre_cross_attention_norm(x)
        h = self.cross_attention(h, encoded, None, cross_mask, rng=fold(rng, 2),
                                 deterministic=deterministic)
        x = _residual(x, dropout(h, rate, fold(rng, 3), deterministic))
        h, aux = self.mlp.forward(self.pre_mlp_norm(x), token_mask, rng=fold(rng, 4),
                                  deterministic=deterministic)
        x = _residual(x, dropout(h, rate, fold(rng, 5), deterministic))
        return (x, aux) if with_aux else x

    def step(self, x: jax.Array, bias, mask, cache: dict, index) -> tuple[jax.Array, dict]:
        """One decoding position: x [batch, 1, d_model]; `cache` holds this layer's self k/v
        [batch, max_len, heads, d_kv] and the encoder's cross k/v. Deterministic."""
        h = self.pre_self_attention_norm(x)
        k_new, v_new = self.self_attention.project_kv(h)
        k = jax.lax.dynamic_update_slice_in_dim(cache["k"], k_new.astype(cache["k"].dtype),
                                                index, axis=1)
        v = jax.lax.dynamic_update_slice_in_dim(cache["v"], v_new.astype(cache["v"].dtype),
                                                index, axis=1)
        x = _residual(x, self.self_attention.attend_to(self.self_attention.project_q(h), k, v,
                                                     bias, mask))
        h = self.pre_cross_attention_norm(x)
        x = _residual(x, self.cross_attention.attend_to(self.cross_attention.project_q(h),
                                                        cache["cross_k"], cache["cross_v"],
                                                        None, cache["cross_mask"]))
        x = _residual(x, self.mlp(self.pre_mlp_norm(x)))
        return x, {**cache, "k": k, "v": v}
