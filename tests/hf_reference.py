"""Builders for HF transformers reference T5 models (PyTorch, CPU) with random weights."""

from __future__ import annotations

import functools

import jax
import numpy as np
import torch
from transformers import T5Config, T5ForConditionalGeneration

from model_zoo import EncoderDecoder
from model_zoo.model_def import model_def, split_params

CONFIGS = {
    # relu + tied (T5 1.0 style), uneven depths, small buckets so log-spaced ones are used
    "relu_tied": dict(vocab_size=96, d_model=32, d_ff=64, num_heads=4, d_kv=8, num_layers=3,
                      num_decoder_layers=2, feed_forward_proj="relu", tie_word_embeddings=True,
                      relative_attention_num_buckets=8, relative_attention_max_distance=20),
    # gated-gelu + untied (T5 1.1 style)
    "gated_untied": dict(vocab_size=96, d_model=32, d_ff=48, num_heads=4, d_kv=12, num_layers=2,
                         num_decoder_layers=3, feed_forward_proj="gated-gelu",
                         tie_word_embeddings=False, relative_attention_num_buckets=16,
                         relative_attention_max_distance=24),
    # gated-SiLU (HF "gated-silu": SiLU on wi_0 times a linear wi_1), untied
    "gated_silu": dict(vocab_size=96, d_model=32, d_ff=40, num_heads=2, d_kv=16, num_layers=2,
                       num_decoder_layers=2, feed_forward_proj="gated-silu",
                       tie_word_embeddings=False, relative_attention_num_buckets=8,
                       relative_attention_max_distance=20),
    # ByT5 style: byte vocabulary padded to 384, encoder 3x deeper than the decoder
    "byt5": dict(vocab_size=384, d_model=32, d_ff=48, num_heads=2, d_kv=16, num_layers=3,
                 num_decoder_layers=1, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                 relative_attention_num_buckets=8, relative_attention_max_distance=20),
}


def make_hf_t5(name: str, seed: int = 0) -> T5ForConditionalGeneration:
    """A random HF T5 whose embeddings are tied the way real T5 checkpoints are."""
    kwargs = dict(CONFIGS[name], dropout_rate=0.0)
    cfg = T5Config(**kwargs)
    cfg.tie_word_embeddings = kwargs["tie_word_embeddings"]  # transformers 5 overrides it
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # real checkpoints share the input embedding with `shared`
        model.encoder.embed_tokens.weight.copy_(model.shared.weight)
        model.decoder.embed_tokens.weight.copy_(model.shared.weight)
        # Random init leaves layer norms at 1; perturb them so the mapping is checked.
        for n, p in model.named_parameters():
            if "layer_norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    return model


def hf_logits(model, enc, dec, enc_mask=None):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(np.asarray(enc)),
                    attention_mask=None if enc_mask is None else torch.tensor(np.asarray(enc_mask)),
                    decoder_input_ids=torch.tensor(np.asarray(dec)))
    return out.logits.numpy()


def hf_loss(model, enc, dec, targets, enc_mask) -> float:
    labels = np.where(np.asarray(targets) > 0, np.asarray(targets), -100)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(np.asarray(enc)),
                    attention_mask=torch.tensor(np.asarray(enc_mask)),
                    decoder_input_ids=torch.tensor(np.asarray(dec)),
                    labels=torch.tensor(labels.astype(np.int64)))
    return float(out.loss)


SWITCH = dict(vocab_size=96, d_model=32, d_ff=48, d_kv=8, num_heads=4, num_layers=4,
              num_decoder_layers=2, num_sparse_encoder_layers=2, num_sparse_decoder_layers=1,
              num_experts=4, expert_capacity=3, relative_attention_num_buckets=8,
              relative_attention_max_distance=20)


def make_hf_switch(seed: int = 0):
    """A random HF SwitchTransformers (tight expert capacity 3, so tokens get dropped)."""
    from transformers import SwitchTransformersConfig, SwitchTransformersForConditionalGeneration

    torch.manual_seed(seed)
    model = SwitchTransformersForConditionalGeneration(
        SwitchTransformersConfig(**SWITCH, dropout_rate=0.0)).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "layer_norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    return model


@functools.partial(jax.jit, static_argnums=0)
def _t5pod_logits(cfg, params, enc, dec):
    return model_def(lambda r: EncoderDecoder(cfg, rngs=r)).bind(params)(enc, dec)


def t5pod_logits(model, enc, dec) -> np.ndarray:
    """t5pod's logits, jitted once per (config, shapes): tests sharing configs compile once."""
    _, params = split_params(model)
    return np.asarray(_t5pod_logits(model.config, params, enc, dec))
