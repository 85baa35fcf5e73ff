"""ModelConfig: the frozen, validated description of a T5-family encoder-decoder."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
ACTIVATIONS = ("relu", "gated-gelu")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "save_attention_out")
ATTENTION_IMPLS = ("einsum", "xla", "cudnn")


def _fail(field: str, value, expected: str):
    raise ValueError(f"ModelConfig.{field}={value!r} is invalid: expected {expected}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Dimensions and numerics of a T5 encoder-decoder (names as in the T5 paper/t5x).

    `dtype` is the compute dtype; params are always stored in `param_dtype` (fp32).
    Softmax, norms and logits are computed in float32 whatever `dtype` is.
    """

    vocab_size: int
    d_model: int
    d_ff: int
    num_heads: int
    d_kv: int
    num_encoder_layers: int
    num_decoder_layers: int
    feed_forward_proj: str = "relu"
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    tie_word_embeddings: bool = True
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = True
    remat_policy: str = "none"
    attention_impl: str = "einsum"

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "d_ff", "num_heads", "d_kv",
                     "num_encoder_layers", "num_decoder_layers",
                     "relative_attention_num_buckets", "relative_attention_max_distance"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                _fail(name, value, "a positive integer")
        if self.feed_forward_proj not in ACTIVATIONS:
            _fail("feed_forward_proj", self.feed_forward_proj, f"one of {ACTIVATIONS}")
        if self.relative_attention_num_buckets < 2:
            _fail("relative_attention_num_buckets", self.relative_attention_num_buckets, ">= 2")
        if self.relative_attention_max_distance <= self.relative_attention_num_buckets // 4:
            quarter = self.relative_attention_num_buckets // 4
            _fail("relative_attention_max_distance", self.relative_attention_max_distance,
                  f"> relative_attention_num_buckets // 4 = {quarter}"
                  " (the log-spaced buckets start there)")
        if not isinstance(self.tie_word_embeddings, bool):
            _fail("tie_word_embeddings", self.tie_word_embeddings, "a bool")
        if not isinstance(self.dropout_rate, (int, float)) or not 0.0 <= self.dropout_rate < 1.0:
            _fail("dropout_rate", self.dropout_rate, "a float in [0, 1)")
        if not isinstance(self.layer_norm_epsilon, (int, float)) or self.layer_norm_epsilon <= 0:
            _fail("layer_norm_epsilon", self.layer_norm_epsilon, "a positive float")
        if self.dtype not in DTYPES:
            _fail("dtype", self.dtype, f"one of {tuple(DTYPES)}")
        if self.param_dtype != "float32":
            _fail("param_dtype", self.param_dtype, "'float32' (master weights stay fp32)")
        if self.remat_policy not in REMAT_POLICIES:
            _fail("remat_policy", self.remat_policy, f"one of {REMAT_POLICIES}")
        if self.attention_impl not in ATTENTION_IMPLS:
            _fail("attention_impl", self.attention_impl, f"one of {ATTENTION_IMPLS}")

    @property
    def compute_dtype(self):
        return DTYPES[self.dtype]

    @property
    def gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated")

    def replace(self, **changes) -> "ModelConfig":
        """A copy with `changes` applied and validated again."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"ModelConfig has no field(s) {sorted(unknown)}; "
                             f"valid fields: {[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)
