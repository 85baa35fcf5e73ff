"""Matmul FLOPs of an encoder-decoder step, for TFLOP/s and MFU (Kaplan/PaLM style counting).

Counted: encoder self-attention over the full square, decoder self-attention over the
causal half, cross-attention, every projection and MLP, and the output logits. An MoE
layer counts its k selected experts per token (the experts-choose average is the train
capacity factor) and the router, not the capacity padding. Training
is 3x the forward pass (backward = 2x forward); remat recompute is not counted (MFU, not
hardware FLOPs). Norms, softmax and embeddings lookups are negligible and left out.
A TreeDNN tree computes as its plain T5 (a batch runs the trunk and one branch);
`param_counts` says what it stores and what serving one branch loads.
"""

from __future__ import annotations

from model_zoo.config import ModelConfig


def _mlp(cfg: ModelConfig, length: int) -> float:
    """One matmul per input projection (`mlp_activations`) plus `wo`."""
    return 2 * length * cfg.d_model * cfg.d_ff * (len(cfg.mlp_activations) + 1)


def _encoder_layer(cfg: ModelConfig, length: int) -> float:
    inner = cfg.num_heads * cfg.d_kv
    return (2 * length * cfg.d_model * inner * 4 + 2 * 2 * length * length * inner
            + _mlp(cfg, length))


def _byte_encoder(cfg: ModelConfig, length: int) -> float:
    """A hybrid model's byte encoder and its projection to d_model."""
    b = cfg.byte_encoder
    projection = 2 * length * b.d_model * cfg.d_model if b.d_model != cfg.d_model else 0
    return b.num_layers * _encoder_layer(b.encoder_config(cfg), length) + projection


def _moe_extra(cfg: ModelConfig, input_len: int, target_len: int) -> float:
    """MoE layers beyond one dense MLP: k experts per token (the capacity factor under
    experts-choose) and the router."""
    moe, extra = cfg.moe, 0.0
    for side, length, layers in (("encoder", input_len, cfg.num_encoder_layers),
                                 ("decoder", target_len, cfg.num_decoder_layers)):
        step = moe.sparse_step(side)
        per_token = (moe.train_capacity_factor if moe.routing(side) == "experts_choose"
                     else moe.num_selected_experts)
        per_layer = (per_token - 1) * _mlp(cfg, length) + 2 * length * cfg.d_model * moe.num_experts
        extra += (layers // step if step else 0) * per_layer
    return extra


def forward_flops_per_example(cfg: ModelConfig, input_len: int, target_len: int,
                              expected_steps: float | None = None,
                              byte_input_len: int = 0) -> float:
    """`expected_steps`: mean recurrence steps per token under ACT (default: all of them).
    `byte_input_len`: a hybrid model's byte inputs (its byte encoder, and the longer memory
    the decoder cross-attends to)."""
    d, inner, lt = cfg.d_model, cfg.num_heads * cfg.d_kv, target_len
    hybrid = cfg.byte_encoder is not None and byte_input_len > 0
    memory = input_len + (byte_input_len if hybrid else 0)
    decoder_layer = (2 * lt * d * inner * 4 + 2 * 2 * lt * lt * inner * 0.5    # causal self
                     + 2 * lt * d * inner * 2 + 2 * memory * d * inner * 2     # cross q,o / k,v
                     + 2 * 2 * lt * memory * inner + _mlp(cfg, lt))
    logits = 2 * lt * d * cfg.vocab_size
    # A Universal Transformer applies its shared block `recurrence` times (ACT: at most).
    steps = cfg.recurrence if expected_steps is None else expected_steps
    return (steps * (cfg.num_encoder_layers * _encoder_layer(cfg, input_len)
                     + cfg.num_decoder_layers * decoder_layer) + logits
            + (_byte_encoder(cfg, byte_input_len) if hybrid else 0.0)
            + (_moe_extra(cfg, input_len, target_len) if cfg.moe is not None else 0.0))


def train_flops_per_step(cfg: ModelConfig, batch: int, input_len: int, target_len: int,
                         expected_steps: float | None = None, byte_input_len: int = 0) -> float:
    return 3.0 * batch * forward_flops_per_example(cfg, input_len, target_len, expected_steps,
                                                   byte_input_len)


def _layer_params(cfg: ModelConfig, side: str) -> int:
    """Params of one dense layer: attention (self, and cross in the decoder), MLP, norms."""
    attention = 4 * cfg.d_model * cfg.num_heads * cfg.d_kv
    mlp = cfg.d_model * cfg.d_ff * (len(cfg.mlp_activations) + 1)
    if side == "encoder":
        return attention + mlp + 2 * cfg.d_model
    return 2 * attention + mlp + 3 * cfg.d_model


def param_counts(cfg: ModelConfig) -> dict[str, int]:
    """Params of a dense T5 or TreeDNN tree (RMS norms): `shared` (the trunk: embeddings,
    relative-position biases, the layers below each split), `per_branch` (one branch's
    layers, final norms and head), `stored` (the trunk and every branch) and `served` (the
    trunk and one branch: the plain T5 a branch exports to). A plain model is all trunk."""
    tree = cfg.tree
    embed = cfg.vocab_size * cfg.d_model
    shared = embed + 2 * cfg.relative_attention_num_buckets * cfg.num_heads
    head = 0 if cfg.tie_word_embeddings else embed
    per_branch = 0
    if tree is not None and tree.branch_head:
        per_branch += head
    else:
        shared += head
    for side, depth in (("encoder", cfg.num_encoder_layers), ("decoder", cfg.num_decoder_layers)):
        split = depth if tree is None else tree.split(side)
        shared += split * _layer_params(cfg, side)
        above = (depth - split) * _layer_params(cfg, side)
        if above:
            per_branch += above + cfg.d_model  # the branch's layers and final norm
        else:
            shared += cfg.d_model
    branches = 1 if tree is None else len(tree.branches)
    return {"shared": shared, "per_branch": per_branch,
            "stored": shared + branches * per_branch, "served": shared + per_branch}
