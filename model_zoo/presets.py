"""Published T5 dimensions (Raffel et al. 2020; T5 1.1 release notes; ByT5, Xue et al. 2022).

T5 1.0: relu MLP, tied input/output embeddings, vocab 32128.
T5 1.1: gated-GELU MLP, untied output layer, no dropout in pretraining (t5_1_1_silu_tiny:
the same with gated-SiLU, Shazeer 2020).
ByT5: T5 1.1 over UTF-8 bytes (vocab padded to 384), encoder 3x deeper than the decoder.
"""

from __future__ import annotations

from fields.choices import require_choice
from model_zoo.config import GATED_GELU, ByteEncoderConfig, ModelConfig, MoEConfig, UniversalConfig

_V = 32128


def _t5_1_0(d_model, d_ff, num_heads, d_kv, layers):
    return ModelConfig(vocab_size=_V, d_model=d_model, d_ff=d_ff, num_heads=num_heads, d_kv=d_kv,
                       num_encoder_layers=layers, num_decoder_layers=layers,
                       mlp_activations=("relu",), tie_word_embeddings=True, dropout_rate=0.1)


def _t5_1_1(d_model, d_ff, num_heads, d_kv, layers):
    return ModelConfig(vocab_size=_V, d_model=d_model, d_ff=d_ff, num_heads=num_heads, d_kv=d_kv,
                       num_encoder_layers=layers, num_decoder_layers=layers,
                       mlp_activations=GATED_GELU, tie_word_embeddings=False, dropout_rate=0.0)


def _byt5(d_model, d_ff, num_heads, encoder_layers, decoder_layers):
    return _t5_1_1(d_model, d_ff, num_heads, 64, encoder_layers).replace(
        vocab_size=_BYTES, num_decoder_layers=decoder_layers)


_BYTES = 384
_TINY = dict(d_model=64, d_ff=128, num_heads=4, d_kv=16, mlp_activations=GATED_GELU,
             tie_word_embeddings=False, dropout_rate=0.0)


# Tokens per MoE routing group (flaxformer's recommendation, about 4096; its rule, so never
# fewer groups than experts x expert replicas): at 512/114 tokens it costs no XLA
# temporaries over one-sequence groups up to 32 rows per device (docs/scaling.md, measured
# with the earlier ceil rule), and holds the capacity factor where a 114-token sequence
# would get min_expert_capacity slots per expert once the batch fills the groups.
GROUP_SIZE = 4096
# MoE dispatch by gather (docs/performance.md): the same routing as the einsum reference at
# 1.02x the experts' FLOPs instead of 1.9x (switch_base_128, 4096-token groups), no token
# all-gather under expert parallelism, and the fastest step in tools.bench on CPU.
DISPATCH = "index"


def _switch(d_model, d_ff, num_heads, layers, experts):
    """Switch Transformer (Fedus et al. 2021): T5 1.0 dense parts, every other feed-forward a
    top-1 MoE (the HF google/switch-* layout), capacity factors 1.25 train / 2.0 eval."""
    return _t5_1_0(d_model, d_ff, num_heads, 64, layers).replace(
        moe=MoEConfig(num_experts=experts, router_jitter_noise=0.01, group_size=GROUP_SIZE,
                      dispatch=DISPATCH))


def _st_moe(d_model, d_ff, num_heads, layers, experts):
    """ST-MoE style (Zoph et al. 2022): T5 1.1 dense parts, top-2 routing, an MoE layer every
    4th feed-forward, router z-loss 0.001 and balancing loss 0.01."""
    moe = MoEConfig(num_experts=experts, num_selected_experts=2, encoder_sparse_step=4,
                    decoder_sparse_step=4, group_size=GROUP_SIZE, dispatch=DISPATCH)
    return _t5_1_1(d_model, d_ff, num_heads, 64, layers).replace(moe=moe)


_TINY_T5_1_0 = dict(vocab_size=_V, d_model=64, d_ff=128, num_heads=4, d_kv=16, dropout_rate=0.0)

PRESETS: dict[str, ModelConfig] = {
    "t5_1_0_small": _t5_1_0(512, 2048, 8, 64, 6),
    "t5_1_0_base": _t5_1_0(768, 3072, 12, 64, 12),
    "t5_1_0_large": _t5_1_0(1024, 4096, 16, 64, 24),
    "t5_1_0_3b": _t5_1_0(1024, 16384, 32, 128, 24),
    "t5_1_0_11b": _t5_1_0(1024, 65536, 128, 128, 24),
    "t5_1_1_small": _t5_1_1(512, 1024, 6, 64, 8),
    "t5_1_1_base": _t5_1_1(768, 2048, 12, 64, 12),
    "t5_1_1_large": _t5_1_1(1024, 2816, 16, 64, 24),
    "t5_1_1_xl": _t5_1_1(2048, 5120, 32, 64, 24),
    "t5_1_1_xxl": _t5_1_1(4096, 10240, 64, 64, 24),
    # Universal Transformers in the T5 1.1 setting: one shared layer per side, applied
    # `steps` times. FLOP-matched to t5_1_1_base (same layer, 12 steps = 12 layers) and
    # parameter-matched to it (a wider shared layer: 248M parameters).
    "universal_base_flop_matched": _t5_1_1(768, 2048, 12, 64, 1).replace(
        universal=UniversalConfig(steps=12)),
    "universal_base_param_matched": _t5_1_1(2048, 5376, 32, 64, 1).replace(
        universal=UniversalConfig(steps=12)),
    "universal_tiny": ModelConfig(vocab_size=_V, d_model=64, d_ff=128, num_heads=4, d_kv=16,
                                  num_encoder_layers=1, num_decoder_layers=1,
                                  mlp_activations=GATED_GELU, tie_word_embeddings=False,
                                  dropout_rate=0.0, universal=UniversalConfig(steps=4)),
    "byt5_small": _byt5(1472, 3584, 6, 12, 4),
    "byt5_base": _byt5(1536, 3968, 12, 18, 6),
    "byt5_large": _byt5(1536, 3840, 16, 36, 12),
    "byt5_xl": _byt5(2560, 6720, 32, 36, 12),
    "byt5_xxl": _byt5(4672, 12352, 64, 36, 12),
    # Hybrid character-aware encoder-decoder: T5 1.1-base with a ByT5-small encoder beside
    # its token encoder (outputs concatenated for cross-attention).
    "hybrid_t5_1_1_base_byt5_small": _t5_1_1(768, 2048, 12, 64, 12).replace(
        byte_encoder=ByteEncoderConfig()),
    # Not published: tiny configs for tests and the CPU quickstart.
    "t5_1_1_tiny": ModelConfig(vocab_size=_V, num_encoder_layers=2, num_decoder_layers=2,
                               **_TINY),
    "t5_1_1_silu_tiny": ModelConfig(vocab_size=_V, num_encoder_layers=2, num_decoder_layers=2,
                                    **{**_TINY, "mlp_activations": ("silu", "linear")}),
    "byt5_tiny": ModelConfig(vocab_size=_BYTES, num_encoder_layers=3, num_decoder_layers=1,
                             **_TINY),
    "hybrid_tiny": ModelConfig(vocab_size=_V, num_encoder_layers=2, num_decoder_layers=2,
                               byte_encoder=ByteEncoderConfig(
                                   d_model=48, d_ff=96, num_heads=4, d_kv=12, num_layers=2),
                               **_TINY),
    # Mixture of experts. switch_base_N is FLOP-matched to t5_1_0_base (+ the router).
    "switch_base_8": _switch(768, 3072, 12, 12, 8),
    "switch_base_16": _switch(768, 3072, 12, 12, 16),
    "switch_base_128": _switch(768, 3072, 12, 12, 128),
    "switch_large_128": _switch(1024, 2816, 16, 24, 128),
    "switch_tiny": ModelConfig(**_TINY_T5_1_0, num_encoder_layers=2, num_decoder_layers=2,
                               moe=MoEConfig(num_experts=4, group_size=GROUP_SIZE,
                                             dispatch=DISPATCH)),
    "st_moe_base_32": _st_moe(768, 2048, 12, 12, 32),
    "st_moe_tiny": ModelConfig(vocab_size=_V, **_TINY, num_encoder_layers=4, num_decoder_layers=4,
                               moe=MoEConfig(num_experts=4, num_selected_experts=2,
                                             encoder_sparse_step=4, decoder_sparse_step=4,
                                             group_size=GROUP_SIZE, dispatch=DISPATCH)),
}


def preset(name: str, **overrides) -> ModelConfig:
    """The named preset, optionally with fields replaced (validated)."""
    require_choice("", "preset", name, PRESETS, meaning="the model presets")
    cfg = PRESETS[name]
    return cfg.replace(**overrides) if overrides else cfg
