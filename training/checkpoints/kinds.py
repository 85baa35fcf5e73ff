"""Which kind of checkpoint a path holds: an HF directory, a t5x checkpoint or a t5pod model_dir.

`detect(path)` looks only at file names (no weights read): "hf" for config.json beside
safetensors (`model_zoo.interop.hf`), "t5pod" for model.json beside checkpoints/ (written by
tools.train), "t5x" for a msgpack `checkpoint` file, a `checkpoint_N` directory (legacy or
orbax `state/`) or a t5x model_dir holding them (`model_zoo.interop.t5x`).
"""

from __future__ import annotations

from fields import paths
from model_zoo.interop import t5x

KINDS = ("hf", "t5pod", "t5x")


def detect(path: str) -> str:
    if not paths.exists(path):
        raise FileNotFoundError(f"checkpoint path {path} does not exist")
    names = set(paths.listdir(path))
    if names:
        if "config.json" in names and names & {"model.safetensors",
                                               "model.safetensors.index.json"}:
            return "hf"
        if "model.json" in names and "checkpoints" in names:
            return "t5pod"
    if paths.is_bucket(path):  # a t5x checkpoint is told by its files (no download yet)
        if names & {"checkpoint", "state"} or any(n.startswith("checkpoint_") for n in names) \
                or paths.name(path) == "checkpoint":
            return "t5x"
    try:
        t5x.find(path)
    except FileNotFoundError:
        found = sorted(names) if names else [paths.name(path)]
        raise FileNotFoundError(
            f"{path} is no checkpoint t5pod reads: expected an HF directory (config.json + "
            "model.safetensors), a t5pod model_dir (model.json + checkpoints/) or a t5x "
            f"checkpoint (a msgpack `checkpoint` file, checkpoint_N/); found {found}") from None
    return "t5x"
