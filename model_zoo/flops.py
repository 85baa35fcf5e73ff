"""Matmul FLOPs of an encoder-decoder step, for TFLOP/s and MFU (Kaplan/PaLM style counting).

Counted: encoder self-attention over the full square, decoder self-attention over the
causal half, cross-attention, every projection and MLP, and the output logits. Training
is 3x the forward pass (backward = 2x forward); remat recompute is not counted (MFU, not
hardware FLOPs). Norms, softmax and embeddings lookups are negligible and left out.
"""

from __future__ import annotations

from model_zoo.config import ModelConfig


def _encoder_layer(cfg: ModelConfig, length: int) -> float:
    inner = cfg.num_heads * cfg.d_kv
    return (2 * length * cfg.d_model * inner * 4 + 2 * 2 * length * length * inner
            + 2 * length * cfg.d_model * cfg.d_ff * (3 if cfg.gated else 2))


def forward_flops_per_example(cfg: ModelConfig, input_len: int, target_len: int,
                              expected_steps: float | None = None,
                              byte_input_len: int = 0) -> float:
    """`expected_steps`: mean recurrence steps per token under ACT (default: all of them).
    `byte_input_len`: a hybrid model's byte inputs (its byte encoder and the longer memory
    the decoder cross-attends to)."""
    d, inner = cfg.d_model, cfg.num_heads * cfg.d_kv
    lt = target_len
    byte_encoder = 0.0
    memory = input_len
    if cfg.byte_encoder is not None and byte_input_len:
        b = cfg.byte_encoder
        byte_cfg = b.encoder_config(cfg)
        byte_encoder = (b.num_layers * _encoder_layer(byte_cfg, byte_input_len)
                        + (2 * byte_input_len * b.d_model * d if b.d_model != d else 0))
        memory = input_len + byte_input_len
    decoder_layer = (2 * lt * d * inner * 4 + 2 * 2 * lt * lt * inner * 0.5    # causal self
                     + 2 * lt * d * inner * 2 + 2 * memory * d * inner * 2     # cross q,o / k,v
                     + 2 * 2 * lt * memory * inner
                     + 2 * lt * d * cfg.d_ff * (3 if cfg.gated else 2))
    logits = 2 * lt * d * cfg.vocab_size
    # A Universal Transformer applies its shared block `recurrence` times (ACT: at most).
    steps = cfg.recurrence if expected_steps is None else expected_steps
    return (steps * (cfg.num_encoder_layers * _encoder_layer(cfg, input_len)
                     + cfg.num_decoder_layers * decoder_layer) + logits + byte_encoder)


def train_flops_per_step(cfg: ModelConfig, batch: int, input_len: int, target_len: int,
                         expected_steps: float | None = None, byte_input_len: int = 0) -> float:
    return 3.0 * batch * forward_flops_per_example(cfg, input_len, target_len, expected_steps,
                                                   byte_input_len)
