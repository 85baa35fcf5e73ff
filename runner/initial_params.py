"""Params a run starts from: INITIAL_CHECKPOINT_PATH, or a hybrid model's pretrained parts.

Every source loads through training/checkpoints/loader.py (HF directory of either era, t5x
checkpoint, t5pod model_dir) and is checked against the run's model before anything is
trained; the optimizer starts fresh. A plain model takes every param. For a hybrid
token+byte model, `INITIAL_CHECKPOINT_PATH` holds the whole hybrid (a t5pod model_dir of
the same model) or a T5 whose shared embedding, encoder, decoder and output layer fill the
token side; `run.train.byte_encoder_checkpoint_path` is a ByT5 whose byte embedding and
encoder fill the byte encoder (its decoder is not used). What no checkpoint provides (the
byte projection) is freshly initialised.
"""

from __future__ import annotations

from training.checkpoints import loader

INITIAL = "INITIAL_CHECKPOINT_PATH"
BYTE = "byte_encoder_checkpoint_path"
TOKEN_PARTS = ("shared", "encoder", "decoder", "lm_head")
# ModelConfig field of the ByT5 checkpoint: ByteEncoderConfig field of the hybrid
BYTE_FIELDS = {"vocab_size": "vocab_size", "d_model": "d_model", "d_ff": "d_ff",
               "num_heads": "num_heads", "d_kv": "d_kv", "num_encoder_layers": "num_layers",
               "mlp_activations": "mlp_activations",
               "relative_attention_num_buckets": "relative_attention_num_buckets"}


def whole_model(path: str, model, trainer, what: str = INITIAL) -> dict:
    """Every param of `model` from the checkpoint at `path`, on the trainer's shardings."""
    ckpt = loader.open_checkpoint(path, what, model=model)
    loader.check_model(ckpt, model)
    _, params = loader.restore(ckpt, trainer.mesh, trainer.rules, config=model,
                                shardings=trainer.state_shardings.params)
    return params


def token_side(path: str, model, trainer) -> dict:
    """A hybrid's token side from a T5 (or everything, from a t5pod model_dir of the hybrid)."""
    t5 = model.replace(byte_encoder=None, frozen=())
    ckpt = loader.open_checkpoint(path, INITIAL, model=t5)
    if ckpt.config.byte_encoder is not None:  # a whole hybrid checkpoint
        return whole_model(path, model, trainer)
    loader.check_model(ckpt, t5, "the token side of this hybrid model")
    _, params = loader.restore(ckpt, trainer.mesh, trainer.rules, config=t5)
    return loader.place(params, trainer.state_shardings.params, TOKEN_PARTS)


def byte_side(path: str, model, trainer) -> dict:
    """A hybrid's byte embedding and encoder from a ByT5 (a t5x one: read as its shapes say)."""
    ckpt = loader.open_checkpoint(path, BYTE)
    b = model.byte_encoder
    loader.check_fields(ckpt, {name: getattr(b, ours) for name, ours in BYTE_FIELDS.items()},
                         "ModelConfig.byte_encoder")
    _, params = loader.restore(ckpt, trainer.mesh, trainer.rules)
    renamed = {"byte_shared": params["shared"], "byte_encoder": params["encoder"]}
    return loader.place(renamed, trainer.state_shardings.params)


def tree_model(path: str, model, trainer) -> dict:
    """A tree's params from a checkpoint of the same tree, or a plain T5 of its dimensions
    copied into every branch (model_zoo.tree.grow)."""
    import jax

    from model_zoo import tree

    ckpt = loader.open_checkpoint(path, INITIAL, model=model)
    if ckpt.config.tree is not None:
        return whole_model(path, model, trainer)
    plain = tree.plain_config(model)
    loader.check_model(ckpt, plain, "each branch of this tree")
    _, params = loader.restore(ckpt, trainer.mesh, trainer.rules, config=plain)
    return jax.device_put(tree.grow(params, model), trainer.state_shardings.params)


def initial_params(run, trainer) -> dict | None:
    """Top-level params to put into the fresh state, or None when nothing is pretrained."""
    if run.model.tree is not None:
        return None if not run.initial_checkpoint_path else tree_model(
            run.initial_checkpoint_path, run.model, trainer)
    if run.model.byte_encoder is None:
        if not run.initial_checkpoint_path:
            return None
        return whole_model(run.initial_checkpoint_path, run.model, trainer)
    parts = {}
    if run.initial_checkpoint_path:
        parts.update(token_side(run.initial_checkpoint_path, run.model, trainer))
    if run.byte_encoder_checkpoint_path:
        parts.update(byte_side(run.byte_encoder_checkpoint_path, run.model, trainer))
    return parts or None
