"""A trained model on disk: a t5pod model_dir's model.json, and params loaded for inference.

A model_dir written by a run holds model.json (the ModelConfig, the task name and its
feature lengths) beside checkpoints/; `load` restores params alone, sharded by the given
rules on the mesh, from a model_dir or an HF T5 directory.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax

import partitioning
from model_zoo import EncoderDecoder, ModelConfig, hf
from model_zoo.model_def import model_def, split_params
from training.checkpoints import Checkpointer, abstract_with_shardings

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


def load(path: str, mesh, rules="data_parallel", step: int | None = None, **overrides):
    """(ModelDef, sharded params, ModelConfig, task name or None)."""
    rules = partitioning.rule_set(rules)
    if os.path.isfile(os.path.join(path, "config.json")):
        mdef, params = split_params(hf.load(path, **overrides))
        cfg, task = hf.read_config(path, **overrides), None
        shardings = partitioning.tree_shardings(mdef.logical_axes(), params, rules, mesh)
        return mdef, jax.device_put(params, shardings), cfg, task
    cfg, task = read_model_json(path)
    if overrides:
        cfg = cfg.replace(**overrides)
    mdef = model_def(lambda r: EncoderDecoder(cfg, rngs=r))
    abstract = mdef.abstract_params()
    shardings = partitioning.tree_shardings(mdef.logical_axes(), abstract, rules, mesh)
    target = abstract_with_shardings(abstract, shardings)
    ckpt = Checkpointer(os.path.join(path, "checkpoints"), async_save=False)
    if ckpt.latest_step() is None:
        raise FileNotFoundError(f"{path}/checkpoints holds no complete checkpoint")
    return mdef, ckpt.restore_params(target, step), cfg, task
