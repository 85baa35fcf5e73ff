"""A t5pod model_dir's model.json: the ModelConfig, the task name and its feature lengths.

A run writes it beside checkpoints/ before its first step; loaders read the model from it
(older spellings of freezing and of the MLP's `feed_forward_proj` included), tools.eval the
lengths the model was trained with.
"""

from __future__ import annotations

import dataclasses
import json

from fields import paths
from model_zoo import ModelConfig
from model_zoo.config import activations_of_feed_forward_proj
from training.run_dir import MODEL_JSON, RunDir


def write_model_json(model_dir, cfg: ModelConfig, task: str | None,
                     lengths: dict | None = None, branch_tasks: dict | None = None) -> None:
    """`branch_tasks`: a tree's {branch: task} (tools.eval/infer --branch read its task)."""
    extra = {} if branch_tasks is None else {"branch_tasks": dict(branch_tasks)}
    paths.write_text(RunDir.of(model_dir).model_json, json.dumps(
        {"model": dataclasses.asdict(cfg), "task": task, "task_feature_lengths": lengths,
         **extra}, indent=2))


def _read(model_dir) -> dict:
    path = RunDir.of(model_dir).model_json
    if not paths.isfile(path):
        raise FileNotFoundError(f"{model_dir} is not a t5pod model_dir (no {MODEL_JSON}) nor an "
                                "HF directory (no config.json)")
    return json.loads(paths.read_text(path))


def _activations(fields: dict) -> dict:
    """`fields` with an older `feed_forward_proj` read as `mlp_activations`."""
    if "feed_forward_proj" not in fields:
        return fields
    fields = dict(fields)
    fields["mlp_activations"] = activations_of_feed_forward_proj(fields.pop("feed_forward_proj"))
    return fields


def _model_config(fields: dict) -> ModelConfig:
    """ModelConfig from model.json, older spellings (freezing, feed_forward_proj) included."""
    fields = _activations(dict(fields))
    frozen = tuple(fields.pop("frozen", ()))
    if fields.pop("freeze_encoder", False):
        frozen += ("encoder",)
    byte = fields.get("byte_encoder")
    if isinstance(byte, dict):
        byte = fields["byte_encoder"] = _activations(byte)
    if isinstance(byte, dict) and "frozen" in byte:
        byte = dict(byte)
        if byte.pop("frozen"):
            frozen += ("byte_shared", "byte_encoder")
        fields["byte_encoder"] = byte
    return ModelConfig(**fields, frozen=frozen)


def read_model_json(model_dir: str) -> tuple[ModelConfig, str | None]:
    meta = _read(model_dir)
    return _model_config(meta["model"]), meta.get("task")


def branch_task(model_dir: str, branch: str) -> str | None:
    """The task a tree run trained branch `branch` on (None: not recorded)."""
    return (_read(model_dir).get("branch_tasks") or {}).get(branch)


def trained_lengths(model_dir: str) -> dict | None:
    """The task_feature_lengths the model was trained with (None: not recorded)."""
    return _read(model_dir).get("task_feature_lengths")
