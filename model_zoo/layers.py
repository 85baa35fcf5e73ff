"""One T5 encoder layer and one decoder layer: pre-norm residual blocks.

In float16 the residual stream is clamped after every sub-layer (model_zoo.fp16_clamp).
With KL-Norm (`ModelConfig.norm = "kl"`) a layer's aux also holds `kl_norm`: the KL of its
norms per token, summed over them, averaged over the real tokens (`token_mask`).
"""

from __future__ import annotations

import jax
from flax import nnx

from model_zoo.attention import MultiHeadAttention
from model_zoo.config import ModelConfig
from model_zoo.dropout import dropout, fold
from model_zoo.fp16_clamp import clamp_float16
from model_zoo.mlp import MLP
from model_zoo.moe.moe_layer import MoEFeedForward
from model_zoo.norm import make_norm, token_mean

# rng streams of the norms (KL-Norm samples), after the dropout streams 0-5 of a layer
_NORM_RNG = 10


def _residual(x: jax.Array, h: jax.Array) -> jax.Array:
    return clamp_float16(x + h)


class _Norms:
    """Applies a layer's norms in order, keeping the KL of each (KL-Norm) for its aux."""

    def __init__(self, rng, deterministic: bool):
        self.rng, self.deterministic, self.kls = rng, deterministic, []

    def __call__(self, norm, x: jax.Array) -> jax.Array:
        h, kl = norm.forward(x, rng=fold(self.rng, _NORM_RNG + len(self.kls)),
                             deterministic=self.deterministic)
        if kl is not None:
            self.kls.append(kl)
        return h

    def aux(self, aux: dict, token_mask) -> dict:
        if not self.kls:
            return aux
        return {**aux, "kl_norm": token_mean(sum(self.kls), token_mask)}


def _attention(cfg: ModelConfig, rngs: nnx.Rngs) -> MultiHeadAttention:
    return MultiHeadAttention(cfg.d_model, cfg.num_heads, cfg.d_kv, cfg.compute_dtype,
                              cfg.attention_impl, cfg.dropout_rate, rngs)


def _mlp(cfg: ModelConfig, rngs: nnx.Rngs, sparse: bool = False, side: str = "encoder"):
    if sparse:
        return MoEFeedForward(cfg, side, rngs)
    return MLP(cfg.d_model, cfg.d_ff, cfg.mlp_activations, cfg.compute_dtype, cfg.dropout_rate,
               rngs)


class EncoderLayer(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, sparse: bool = False):
        self.pre_attention_norm = make_norm(cfg, rngs)
        self.attention = _attention(cfg, rngs)
        self.pre_mlp_norm = make_norm(cfg, rngs)
        self.mlp = _mlp(cfg, rngs, sparse, "encoder")
        self.dropout_rate = cfg.dropout_rate

    def __call__(self, x: jax.Array, bias, mask, *, rng=None, deterministic=True,
                 with_aux=False, token_mask=None):
        rate, norm = self.dropout_rate, _Norms(rng, deterministic)
        h = norm(self.pre_attention_norm, x)
        h = self.attention(h, h, bias, mask, rng=fold(rng, 0), deterministic=deterministic)
        x = _residual(x, dropout(h, rate, fold(rng, 1), deterministic))
        h, aux = self.mlp.forward(norm(self.pre_mlp_norm, x), token_mask, rng=fold(rng, 2),
                                  deterministic=deterministic)
        x = _residual(x, dropout(h, rate, fold(rng, 3), deterministic))
        return (x, norm.aux(aux, token_mask)) if with_aux else x


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, sparse: bool = False):
        self.pre_self_attention_norm = make_norm(cfg, rngs)
        self.self_attention = _attention(cfg, rngs)
        self.pre_cross_attention_norm = make_norm(cfg, rngs)
        self.cross_attention = _attention(cfg, rngs)
        self.pre_mlp_norm = make_norm(cfg, rngs)
        self.mlp = _mlp(cfg, rngs, sparse, "decoder")
        self.dropout_rate = cfg.dropout_rate

    def __call__(self, x: jax.Array, bias, mask, encoded, cross_mask, *, rng=None,
                 deterministic=True, with_aux=False, token_mask=None):
        rate, norm = self.dropout_rate, _Norms(rng, deterministic)
        h = norm(self.pre_self_attention_norm, x)
        h = self.self_attention(h, h, bias, mask, rng=fold(rng, 0), deterministic=deterministic)
        x = _residual(x, dropout(h, rate, fold(rng, 1), deterministic))
        h = norm(self.pre_cross_attention_norm, x)
        h = self.cross_attention(h, encoded, None, cross_mask, rng=fold(rng, 2),
                                 deterministic=deterministic)
        x = _residual(x, dropout(h, rate, fold(rng, 3), deterministic))
        h, aux = self.mlp.forward(norm(self.pre_mlp_norm, x), token_mask, rng=fold(rng, 4),
                                  deterministic=deterministic)
        x = _residual(x, dropout(h, rate, fold(rng, 5), deterministic))
        return (x, norm.aux(aux, token_mask)) if with_aux else x

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
