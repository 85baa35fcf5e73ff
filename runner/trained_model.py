"""Load a model's params for inference from a t5pod model_dir or an HF T5 directory.

A model_dir written by tools.train holds model.json (the ModelConfig and the task name)
beside checkpoints/; params are restored alone, sharded by the given rules on the mesh.
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


def write_model_json(model_dir: str, cfg: ModelConfig, task: str | None) -> None:
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, MODEL_JSON), "w") as f:
        json.dump({"model": dataclasses.asdict(cfg), "task": task}, f, indent=2)


def read_model_json(model_dir: str) -> tuple[ModelConfig, str | None]:
    path = os.path.join(model_dir, MODEL_JSON)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{model_dir} is not a t5pod model_dir (no {MODEL_JSON}) nor an "
                                "HF directory (no config.json)")
    with open(path) as f:
        meta = json.load(f)
    return ModelConfig(**meta["model"]), meta.get("task")


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
