"""Params a run starts from: INITIAL_CHECKPOINT_PATH, or a hybrid model's pretrained parts.

A plain model loads every param from an HF T5 directory or a t5pod model_dir (the optimizer
starts fresh). For a hybrid token+byte model, `INITIAL_CHECKPOINT_PATH` may hold the whole
hybrid (a t5pod model_dir of the same model) or a T5 (HF directory or t5pod model_dir)
whose shared embedding, encoder, decoder and output layer fill the token side;
`run.train.byte_encoder_checkpoint_path` is a ByT5 (HF directory or t5pod model_dir) whose
byte embedding and encoder fill the byte encoder; its decoder is not used. What no
checkpoint provides (e.g. the byte projection) is freshly initialised. Every part is checked
against the run's model before anything is trained.
"""

from __future__ import annotations

import os

import jax

from model_zoo.identity import differences, identity_of

def load_initial_params(path: str, model_def, shardings, identity: dict | None = None):
    """Params from an HF T5 directory or a t5pod checkpoint directory (fresh optimizer).

    `identity` (see model_zoo.identity) must match the checkpoint's model, else a clear error.
    """
    from model_zoo import hf
    from model_zoo.model_def import split_params
    from training.checkpoints import Checkpointer, abstract_with_shardings

    if not os.path.exists(path):
        raise FileNotFoundError(f"INITIAL_CHECKPOINT_PATH={path} does not exist")
    if os.path.isfile(os.path.join(path, "config.json")):
        if identity is not None:
            diff = differences(identity_of(hf.read_config(path)), identity)
            if diff:
                raise ValueError(f"INITIAL_CHECKPOINT_PATH={path} holds a different model than "
                                 f"this run (field: (checkpoint, run) = {diff})")
        _, params = split_params(hf.load(path))
        return jax.device_put(params, shardings)
    ckpt_dir = path if os.path.basename(path.rstrip("/")) == "checkpoints" or not os.path.isdir(
        os.path.join(path, "checkpoints")) else os.path.join(path, "checkpoints")
    ckpt = Checkpointer(ckpt_dir, async_save=False, identity=identity)
    if ckpt.latest_step() is None:
        raise FileNotFoundError(f"INITIAL_CHECKPOINT_PATH={path} is neither an HF directory "
                                "(config.json) nor a t5pod model_dir with complete checkpoints")
    abstract = abstract_with_shardings(model_def.abstract_params(), shardings)
    return ckpt.restore_params(abstract)


TOKEN_PARTS = ("shared", "encoder", "decoder", "lm_head")
BYTE_FIELDS = {"vocab_size": "vocab_size", "d_model": "d_model", "d_ff": "d_ff",
               "num_heads": "num_heads", "d_kv": "d_kv", "num_encoder_layers": "num_layers",
               "feed_forward_proj": "feed_forward_proj",
               "relative_attention_num_buckets": "relative_attention_num_buckets"}


def _load(path: str, trainer):
    from runner import trained_model

    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint path {path} does not exist")
    mdef, params, cfg, _ = trained_model.load(path, trainer.mesh, trainer.rules)
    return params, cfg


def _place(params: dict, names, trainer) -> dict:
    target = trainer.state_shardings.params
    return {k: jax.device_put(params[k], target[k]) for k in names if k in params}


def token_side(path: str, run, trainer) -> dict:
    if os.path.isfile(os.path.join(path, "model.json")):
        from runner.trained_model import read_model_json

        if read_model_json(path)[0].byte_encoder is not None:  # a whole hybrid checkpoint
            return load_initial_params(path, trainer.model_def,
                                       trainer.state_shardings.params, identity_of(run.model))
    params, cfg = _load(path, trainer)
    diff = differences(identity_of(cfg), identity_of(run.model.replace(byte_encoder=None,
                                                                        frozen=())))
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


def initial_params(run, trainer) -> dict | None:
    """Top-level params to put into the fresh state, or None when nothing is pretrained."""
    if run.model.byte_encoder is None:
        if not run.initial_checkpoint_path:
            return None
        return load_initial_params(run.initial_checkpoint_path, trainer.model_def,
                                   trainer.state_shardings.params, identity_of(run.model))
    parts = {}
    if run.initial_checkpoint_path:
        parts.update(token_side(run.initial_checkpoint_path, run, trainer))
    if run.byte_encoder_checkpoint_path:
        parts.update(byte_side(run.byte_encoder_checkpoint_path, run, trainer))
    return parts or None
