"""A model's identity: the ModelConfig fields its params depend on.

Checkpoints record it, and every loader (t5pod model_dir, HF directory, a hybrid's parts)
compares it with the run's model before restoring anything. Numerics that leave the params
unchanged (dtype, dropout, remat, attention kernel, frozen parts) are not part of it.
It is JSON-shaped (lists, not tuples), so a stored identity compares equal to a fresh one
(an older stored one is read through fields/old_formats.py).
"""

from __future__ import annotations

import dataclasses

from model_zoo.config import ModelConfig

FIELDS = ("vocab_size", "d_model", "d_ff", "num_heads", "d_kv", "num_encoder_layers",
          "num_decoder_layers", "mlp_activations", "relative_attention_num_buckets",
          "tie_word_embeddings")


def identity_of(model_cfg: ModelConfig) -> dict:
    """The fields a checkpoint's params depend on, as a JSON-able dict."""
    out = {k: getattr(model_cfg, k) for k in FIELDS}
    out["mlp_activations"] = list(model_cfg.mlp_activations)
    u = model_cfg.universal
    out["universal"] = None if u is None else {"act": u.act}  # ACT adds halting params
    b = model_cfg.byte_encoder
    if b is not None:  # absent for other models, so their identities stay as they were
        out["byte_encoder"] = {**dataclasses.asdict(b),
                               "mlp_activations": list(b.mlp_activations)}
    if model_cfg.norm != "rms":  # KL-Norm's extra params; RMS identities stay as they were
        out["norm"] = model_cfg.norm
    t = model_cfg.tree
    if t is not None:  # absent for plain models, so their identities stay as they were
        out["tree"] = {**dataclasses.asdict(t), "branches": list(t.branches)}
    m = model_cfg.moe
    out["moe"] = None if m is None else {k: getattr(m, k) for k in (
        "num_experts", "encoder_sparse_step", "decoder_sparse_step")}
    return out


def differences(have: dict, want: dict) -> dict:
    """{field: (have, want)} where two identities differ (fields of `want`)."""
    out = {k: (have.get(k), want[k]) for k in want if have.get(k) != want[k]}
    if have.get("tree") is not None and "tree" not in want:  # a tree read as a plain T5
        out["tree"] = (have["tree"], None)
    return out
