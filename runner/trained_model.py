"""A trained model on disk, loaded for inference.

A model_dir written by a run holds model.json (runner/model_json.py) beside checkpoints/;
`load` restores params alone for inference, sharded by the given rules on the mesh, from a
model_dir, an HF directory or a t5x checkpoint, through the one loader
(runner/checkpoint_sources.py).
"""

from __future__ import annotations

from model_zoo import ModelConfig
from runner import checkpoint_sources as loader
from runner.model_json import write_model_json  # noqa: F401 - runner.train imports it here


def load(path: str, mesh, rules="data_parallel", step: int | None = None,
         model: ModelConfig | None = None, what: str = "model_dir", **overrides):
    """(ModelDef, sharded params, ModelConfig, task name or None) for inference, from a t5pod
    model_dir (`step`: one of its steps), an HF directory or a t5x checkpoint
    (runner/checkpoint_sources.py). `model`: the ModelConfig a t5x checkpoint is read as
    (default: its shapes and config.gin); for the others it must be the model they hold.
    `overrides` replace fields that leave the params unchanged (dtype, ...)."""
    ckpt = loader.open_checkpoint(path, what, model=model, step=step, **overrides)
    if model is not None:
        loader.check_model(ckpt, model, "the model given", "given")
        cfg = model.replace(**overrides) if overrides else model
    else:
        cfg = ckpt.config
    mdef, params = loader.restore(ckpt, mesh, rules, config=cfg)
    return mdef, params, cfg, ckpt.task


def model_from_gin_for(path: str, gin_files: list[str], gin_bindings: list[str]):
    """The ModelConfig gin binds (`model_zoo.model`) for a t5x checkpoint, which stores none;
    None for other sources or when the gin files bind no model (a t5x checkpoint is then
    read as its shapes and config.gin say)."""
    from model_zoo import sources

    if not (gin_files or gin_bindings):
        return None
    try:
        if sources.detect(path) != "t5x":
            return None
    except FileNotFoundError:
        return None  # not a t5x checkpoint: `load` names what the path is
    import gin

    from runner import configurables, gin_flags

    try:
        gin_flags.parse(gin_files, gin_bindings)
        try:
            gin.query_parameter("model_zoo.model.preset_name")
        except ValueError:
            return None
        return configurables.model()
    finally:
        gin.clear_config()
