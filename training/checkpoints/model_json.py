"""A t5pod model_dir's model.json: the ModelConfig, the task name and its feature lengths.

A run writes it beside checkpoints/ before its first step; loaders read the model from it
(older files through fields/old_formats.py), tools.eval the lengths it was trained with.
"""

from __future__ import annotations

import dataclasses
import json

from fields import old_formats, paths
from model_zoo import ModelConfig
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


def read_model_json(model_dir: str) -> tuple[ModelConfig, str | None]:
    meta = _read(model_dir)
    return ModelConfig(**old_formats.model_fields(meta["model"])), meta.get("task")


def branch_task(model_dir: str, branch: str) -> str | None:
    """The task a tree run trained branch `branch` on (None: not recorded)."""
    return (_read(model_dir).get("branch_tasks") or {}).get(branch)


def trained_lengths(model_dir: str) -> dict | None:
    """The task_feature_lengths the model was trained with (None: not recorded)."""
    return _read(model_dir).get("task_feature_lengths")
