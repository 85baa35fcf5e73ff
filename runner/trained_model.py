"""A trained model on disk: a t5pod model_dir's model.json, and params loaded for inference.

A model_dir written by a run holds model.json (the ModelConfig, the task name and its
feature lengths) beside checkpoints/; `load` restores params alone for inference, sharded
by the given rules on the mesh, from a model_dir, an HF directory or a t5x checkpoint, through
the one loader (runner/checkpoint_sources.py).
"""

from __future__ import annotations

import dataclasses
import json
import os

from model_zoo import ModelConfig

MODEL_JSON = "model.json"


def write_model_json(model_dir: str, cfg: ModelConfig, task: str | None,
                     lengths: dict | None = None) -> None:
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, MODEL_JSON), "w") as f:
        json.dump({"model": dataclasses.asdict(cfg), "task": task,
                   "task_feature_lengths": lengths}, f, indent=2)


def _read(model_dir: str) -> dict:
    path = os.path.join(model_dir, MODEL_JSON)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{model_dir} is not a t5pod model_dir (no {MODEL_JSON}) nor an "
                                "HF directory (no config.json)")
    with open(path) as f:
        return json.load(f)


def _model_config(fields: dict) -> ModelConfig:
    """ModelConfig from model.json, older freezing spellings included."""
    fields = dict(fields)
    frozen = tuple(fields.pop("frozen", ()))
    if fields.pop("freeze_encoder", False):
        frozen += ("encoder",)
    byte = fields.get("byte_encoder")
    if isinstance(byte, dict) and "frozen" in byte:
        byte = dict(byte)
        if byte.pop("frozen"):
            frozen += ("byte_shared", "byte_encoder")
        fields["byte_encoder"] = byte
    return ModelConfig(**fields, frozen=frozen)


def read_model_json(model_dir: str) -> tuple[ModelConfig, str | None]:
    meta = _read(model_dir)
    return _model_config(meta["model"]), meta.get("task")


def trained_lengths(model_dir: str) -> dict | None:
    """The task_feature_lengths the model was trained with (None: not recorded)."""
    return _read(model_dir).get("task_feature_lengths")


def load(path: str, mesh, rules="data_parallel", step: int | None = None,
         model: ModelConfig | None = None, what: str = "model_dir", **overrides):
    """(ModelDef, sharded params, ModelConfig, task name or None) for inference, from a t5pod
    model_dir (`step`: one of its steps), an HF directory or a t5x checkpoint
    (runner/checkpoint_sources.py). `model`: the ModelConfig a t5x checkpoint is read as
    (default: its shapes and config.gin); for the others it must be the model they hold.
    `overrides` replace fields that leave the params unchanged (dtype, ...)."""
    from runner import checkpoint_sources as loader

    ckpt = loader.open_checkpoint(path, what, model=model, step=step, **overrides)
    if model is not None:
        loader.check_model(ckpt, model, "the model given")
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
