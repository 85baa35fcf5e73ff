"""T5 multi-head attention: no 1/sqrt(d_kv) scaling, an additive position bias, fp32 softmax.

Three interchangeable kernels compute softmax(q k^T + bias, masked) v:
  einsum - explicit dot products (supports attention-probability dropout),
  xla    - `jax.nn.dot_product_attention(implementation="xla")`,
  cudnn  - `jax.nn.dot_product_attention(implementation="cudnn")` (fused, GPU only).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from model_zoo.axes import constrain, param
from model_zoo.dropout import dropout
from model_zoo.masks import AttentionMask
from model_zoo.mixed_einsum import mixed_einsum

NEG_INF = -1e10  # finite so fully masked rows stay finite


def attention_weights_einsum(q, k, v, bias, mask, dropout_rate, rng, deterministic):
    """softmax(q k^T + bias) v with q [b,q,h,d], k/v [b,k,h,d], bias [.,h,q,k], mask [.,.,q,k]."""
    logits = mixed_einsum("bqhd,bkhd->bhqk", q, k)
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = jnp.where(mask, logits, NEG_INF)
    probs = jax.nn.softmax(logits, axis=-1)
    probs = dropout(probs, dropout_rate, rng, deterministic)
    return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)


def _array(mask: AttentionMask | jax.Array | None) -> jax.Array | None:
    return mask.dense if isinstance(mask, AttentionMask) else mask


def fused_attention(q, k, v, bias, mask: AttentionMask | jax.Array | None, impl: str):
    """`jax.nn.dot_product_attention`, given the mask's hints rather than its array where
    they are exact: cuDNN then masks by lengths / causality and keeps the learned bias
    [1, heads, q, k] (and its gradient) that small, instead of adding a [batch, 1, ., k]
    mask into a [batch, heads, q, k] bias. Padding that is not trailing takes the array."""
    bias = None if bias is None else bias.astype(q.dtype)

    def with_array():
        return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=_array(mask), scale=1.0,
                                            implementation=impl)

    if not isinstance(mask, AttentionMask) or not (mask.causal or mask.key_lengths is not None):
        return with_array()

    def with_hints():
        return jax.nn.dot_product_attention(
            q, k, v, bias=bias, scale=1.0, is_causal=mask.causal,
            key_value_seq_lengths=mask.key_lengths, implementation=impl)

    if mask.key_lengths is None:  # causal: exact by construction
        return with_hints()
    return jax.lax.cond(mask.trailing, with_hints, with_array)


def attend(q, k, v, bias, mask, *, impl: str, dropout_rate: float, rng, deterministic: bool):
    """Dispatch to one attention kernel; dropout on probabilities forces the einsum kernel.

    `mask`: an `AttentionMask`, a boolean array [batch|1, 1, q, k], or None."""
    if impl == "einsum" or (dropout_rate > 0.0 and not deterministic):
        return attention_weights_einsum(q, k, v, bias, _array(mask), dropout_rate, rng,
                                        deterministic)
    return fused_attention(q, k, v, bias, mask, impl)


class MultiHeadAttention(nnx.Module):
    def __init__(self, d_model: int, num_heads: int, d_kv: int, dtype, impl: str,
                 dropout_rate: float, rngs: nnx.Rngs):
        normal = jax.nn.initializers.normal
        inner = num_heads * d_kv
        # Mesh-TF T5 init: the query absorbs the missing 1/sqrt(d_kv) scaling.
        self.query = param(rngs, normal((d_model * d_kv) ** -0.5), (d_model, num_heads, d_kv),
                           ("embed", "heads", "kv"))
        self.key = param(rngs, normal(d_model ** -0.5), (d_model, num_heads, d_kv),
                         ("embed", "heads", "kv"))
        self.value = param(rngs, normal(d_model ** -0.5), (d_model, num_heads, d_kv),
                           ("embed", "heads", "kv"))
        self.out = param(rngs, normal(inner ** -0.5), (num_heads, d_kv, d_model),
                         ("heads", "kv", "embed"))
        self.dtype = dtype
        self.impl = impl
        self.dropout_rate = dropout_rate

    def project_kv(self, x_kv: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Keys and values [batch, len, heads, d_kv] of the attended sequence."""
        k = jnp.einsum("bsd,dhk->bshk", x_kv, self.key[...].astype(self.dtype))
        v = jnp.einsum("bsd,dhk->bshk", x_kv, self.value[...].astype(self.dtype))
        names = ("batch", "length", "heads", "kv")
        return constrain(k, names), constrain(v, names)

    def project_q(self, x_q: jax.Array) -> jax.Array:
        """Queries [batch, len, heads, d_kv]."""
        q = jnp.einsum("bqd,dhk->bqhk", x_q, self.query[...].astype(self.dtype))
        return constrain(q, ("batch", "length", "heads", "kv"))

    def attend_to(self, q, k, v, bias, mask, *, rng=None, deterministic: bool = True):
        """Attention of projected queries over projected keys/values (e.g. a KV cache)."""
        ctx = attend(q, k, v, bias, mask, impl=self.impl, dropout_rate=self.dropout_rate,
                     rng=rng, deterministic=deterministic)
        out = jnp.einsum("bqhk,hkd->bqd", ctx, self.out[...].astype(self.dtype))
        return checkpoint_name(constrain(out, ("batch", "length", "embed")), "attention_out")

    def __call__(self, x_q: jax.Array, x_kv: jax.Array, bias, mask, *, rng=None,
                 deterministic: bool = True) -> jax.Array:
        k, v = self.project_kv(x_kv)
        return self.attend_to(self.project_q(x_q), k, v, bias, mask, rng=rng,
                              deterministic=deterministic)
