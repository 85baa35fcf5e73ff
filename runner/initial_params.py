"""Start a hybrid token+byte model from pretrained parts.

`INITIAL_CHECKPOINT_PATH` may hold the whole hybrid (a t5pod model_dir of the same model)
or a T5 (HF directory or t5pod model_dir) whose shared embedding, encoder, decoder and
output layer fill the token side. `run.train.byte_encoder_checkpoint_path` is a ByT5 (HF
directory or t5pod model_dir) whose byte embedding and encoder fill the byte encoder; its
decoder is not used. What no checkpoint provides (e.g. the byte projection) is freshly
initialised. Every part is checked against the run's model before anything is trained.
"""

from __future__ import annotations

import os

import jax

TOKEN_PARTS = ("shared", "encoder", "decoder", "lm_head")
BYTE_FIELDS = {"vocab_size": "vocab_size", "d_model": "d_model", "d_ff": "d_ff",
               "num_heads": "num_heads", "d_kv": "d_kv", "num_encoder_layers": "num_layers",
               "feed_forward_proj": "feed_forward_proj",
               "relative_attention_num_buckets": "relative_attention_num_buckets"}


def _load(path: str, trainer):
    from runner import trained_model as restore

    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint path {path} does not exist")
    mdef, params, cfg, _ = restore.load(path, trainer.mesh, trainer.rules)
    return params, cfg


def _place(params: dict, names, trainer) -> dict:
    target = trainer.state_shardings.params
    return {k: jax.device_put(params[k], target[k]) for k in names if k in params}


def token_side(path: str, run, trainer) -> dict:
    from tools.train import identity_of

    if os.path.isfile(os.path.join(path, "model.json")):
        from runner.trained_model import read_model_json

        if read_model_json(path)[0].byte_encoder is not None:  # a whole hybrid checkpoint
            from tools.train import load_initial_params

            return load_initial_params(path, trainer.model_def,
                                       trainer.state_shardings.params, identity_of(run.model))
    params, cfg = _load(path, trainer)
    want = identity_of(run.model.replace(byte_encoder=None, freeze_encoder=False))
    have = identity_of(cfg)
    diff = {k: (have.get(k), want[k]) for k in want if have.get(k) != want[k]}
    if diff:
        raise ValueError(f"INITIAL_CHECKPOINT_PATH={path} is not the token side of this hybrid "
                         f"model (field: (checkpoint, run) = {diff})")
    return _place(params, TOKEN_PARTS, trainer)


def byte_side(path: str, run, trainer) -> dict:
    params, cfg = _load(path, trainer)
    b = run.model.byte_encoder
    diff = {name: (getattr(cfg, name), getattr(b, ours)) for name, ours in BYTE_FIELDS.items()
            if getattr(cfg, name) != getattr(b, ours)}
    if diff:
        raise ValueError(f"byte_encoder_checkpoint_path={path} does not match "
                         f"ModelConfig.byte_encoder (field: (checkpoint, run) = {diff})")
    renamed = {"byte_shared": params["shared"], "byte_encoder": params["encoder"]}
    return _place(renamed, ("byte_shared", "byte_encoder"), trainer)


def hybrid_initial_params(run, trainer) -> dict | None:
    """Top-level params to put into the fresh state, or None when nothing is pretrained."""
    parts = {}
    if run.initial_checkpoint_path:
        parts.update(token_side(run.initial_checkpoint_path, run, trainer))
    if run.byte_encoder_checkpoint_path:
        parts.update(byte_side(run.byte_encoder_checkpoint_path, run, trainer))
    return parts or None
