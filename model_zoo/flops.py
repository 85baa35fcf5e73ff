"""Matmul FLOPs of an encoder-decoder step, for TFLOP/s and MFU (Kaplan/PaLM style counting).

Counted: encoder self-attention over the full square, decoder self-attention over the
causal half, cross-attention, every projection and MLP, and the output logits. An MoE
layer counts its k selected experts per token (the experts-choose average is the train
capacity factor) and the router, not the capacity padding. Training
is 3x the forward pass (backward = 2x forward); remat recompute is not counted (MFU, not
hardware FLOPs). Norms, softmax and embeddings lookups are negligible and left out.
"""

from __future__ import annotations

from model_zoo.config import ModelConfig


def forward_flops_per_example(cfg: ModelConfig, input_len: int, target_len: int,
                              expected_steps: float | None = None) -> float:
    """`expected_steps`: mean recurrence steps per token under ACT (default: all of them)."""
    d, inner = cfg.d_model, cfg.num_heads * cfg.d_kv
    mlp_mats = 3 if cfg.gated else 2
    li, lt = input_len, target_len

    def mlp(length):
        return 2 * length * d * cfg.d_ff * mlp_mats

    encoder_layer = 2 * li * d * inner * 4 + 2 * 2 * li * li * inner + mlp(li)
    decoder_layer = (2 * lt * d * inner * 4 + 2 * 2 * lt * lt * inner * 0.5    # causal self
                     + 2 * lt * d * inner * 2 + 2 * li * d * inner * 2         # cross q,o / k,v
                     + 2 * 2 * lt * li * inner + mlp(lt))
    logits = 2 * lt * d * cfg.vocab_size
    moe_extra = 0.0
    if cfg.moe is not None:  # MoE layers: k experts per token (cf under experts-choose) + router
        moe = cfg.moe
        for side, length, layers in (("encoder", li, cfg.num_encoder_layers),
                                     ("decoder", lt, cfg.num_decoder_layers)):
            step = moe.sparse_step(side)
            per_token = (moe.train_capacity_factor if moe.routing(side) == "experts_choose"
                         else moe.num_selected_experts)
            extra = (per_token - 1) * mlp(length) + 2 * length * d * moe.num_experts
            moe_extra += (layers // step if step else 0) * extra
    # A Universal Transformer applies its shared block `recurrence` times (ACT: at most).
    steps = cfg.recurrence if expected_steps is None else expected_steps
    return (steps * (cfg.num_encoder_layers * encoder_layer
                     + cfg.num_decoder_layers * decoder_layer) + logits + moe_extra)


def train_flops_per_step(cfg: ModelConfig, batch: int, input_len: int, target_len: int,
                         expected_steps: float | None = None) -> float:
    return 3.0 * batch * forward_flops_per_example(cfg, input_len, target_len, expected_steps)
