"""Files earlier t5pod versions wrote, read as today's: the one place old formats are read.

Every reader here upgrades something a t5pod from main before the 0.1.0 release wrote into
a model_dir (checkpoint steps, model.json) or into an HF export, so a run started then still
resumes and loads. Each is called at the one point where its file is read; nothing else in
t5pod knows the old spellings. Imports nothing of t5pod (model_zoo and training both call it).

What each reader upgrades, and the commit (date) that stopped writing it:

- `model_fields`: model.json's "model". `feed_forward_proj` (HF's spelling, also inside
  `byte_encoder`) becomes `mlp_activations` (f5c8e48, 2026-12-03); `freeze_encoder` and
  `byte_encoder.frozen` become names in `frozen` (aa6094f, 2026-12-01); `moe` as
  `moe_fields`.
- `moe_fields`: MoE fields of model.json and of an HF export's `t5pod_moe`. The
  encoder-only `batch_prioritized_routing` becomes `encoder_batch_prioritized_routing`; no
  `router_loss_reduction` means "stacks_sum", what those runs trained with (7118a1b,
  2026-12-03).
- `identity`: a checkpoint step's `identity/metadata`, `feed_forward_proj` as above.
- `LossScaleWithoutStreak`, `restore_target`, `upgraded`: a step's `state/loss_scale`
  without `skipped_in_a_row`; it restores with a streak of 0 (6e3b652, 2026-12-01).
- `FEED_STATE_FILE`: one `input/metadata` JSON feed state (orbax's JsonSave, written by host
  0 for all hosts) instead of `input/process_I-of-N.json` (df8a328, 2026-12-03).
- `feed_state`: a saved feed position without "cache" (before task caches): the live
  pipeline (df8a328, 2026-12-03).
- `check_step_without_manifest`: a step without `t5pod_manifest.json` is checked for its
  required files and readable JSON only, and restores as unverified (753de05, 2026-12-01).

When they go: no released version wrote any of these (t5pod's version has been 0.1.0 since
the first commit, 2026-11-27, and 0.1.0 is the first release). Delete this module and its
callers' old branches at 0.2.0; tests/test_old_formats.py fails from then on as a reminder.
A model_dir saved before 2026-12-04 must then be re-saved with a 0.1.x t5pod (restore and
save one step), or its model.json edited by hand.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

REMOVE_AT = (0, 2)  # the version that deletes this module

# -- model.json and stored identities ---------------------------------------------------

# `feed_forward_proj` (HF's spelling of the MLP) as `mlp_activations`.
FEED_FORWARD_PROJ = {"relu": ("relu",), "gated-gelu": ("gelu", "linear"),
                     "gated-silu": ("silu", "linear")}


def _activations(fields: dict) -> dict:
    if "feed_forward_proj" not in fields:
        return fields
    fields = dict(fields)
    proj = fields.pop("feed_forward_proj")
    if proj not in FEED_FORWARD_PROJ:
        raise ValueError(f"feed_forward_proj={proj!r} is not a spelling t5pod wrote; expected "
                         f"one of {tuple(FEED_FORWARD_PROJ)}")
    fields["mlp_activations"] = list(FEED_FORWARD_PROJ[proj])
    return fields


def moe_fields(fields: dict) -> dict:
    """MoEConfig fields as saved before 7118a1b, in today's names."""
    fields = dict(fields)
    if "batch_prioritized_routing" in fields:
        fields["encoder_batch_prioritized_routing"] = fields.pop("batch_prioritized_routing")
    fields.setdefault("router_loss_reduction", "stacks_sum")
    return fields


def model_fields(fields: dict) -> dict:
    """model.json's "model" (ModelConfig fields) in today's names."""
    fields = _activations(dict(fields))
    frozen = list(fields.pop("frozen", ()))
    if fields.pop("freeze_encoder", False):
        frozen.append("encoder")
    byte = fields.get("byte_encoder")
    if isinstance(byte, dict):
        byte = _activations(byte)
        if byte.pop("frozen", False):
            frozen += ["byte_shared", "byte_encoder"]
        fields["byte_encoder"] = byte
    if isinstance(fields.get("moe"), dict):
        fields["moe"] = moe_fields(fields["moe"])
    fields["frozen"] = tuple(frozen)
    return fields


def identity(stored: dict) -> dict:
    """A step's stored identity in today's fields."""
    out = _activations(stored)
    if isinstance(out.get("byte_encoder"), dict):
        out = {**out, "byte_encoder": _activations(out["byte_encoder"])}
    return out


# -- checkpoint steps -------------------------------------------------------------------

FEED_STATE_FILE = "metadata"  # in a step's input/: the one JSON file orbax's JsonSave wrote


def feed_state(state: dict) -> dict:
    """A saved feed state; one saved before task caches read the live pipeline."""
    return {"cache": None, **state}


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class LossScaleWithoutStreak:
    """The loss-scale state as steps saved before `skipped_in_a_row` hold it."""

    scale: jax.Array
    good_steps: jax.Array
    skipped: jax.Array

    @staticmethod
    def of(state) -> "LossScaleWithoutStreak":
        return LossScaleWithoutStreak(state.scale, state.good_steps, state.skipped)


def loss_scale_without_streak(state_tree_metadata) -> bool:
    """Whether a step's `state` item (orbax's metadata tree) has the old loss-scale layout."""
    return "skipped_in_a_row" not in state_tree_metadata["loss_scale"]


def restore_target(abstract_state):
    """The train state to restore such a step into (the old loss-scale layout)."""
    return dataclasses.replace(abstract_state,
                               loss_scale=LossScaleWithoutStreak.of(abstract_state.loss_scale))


def upgraded(state, abstract_state):
    """A state restored with `restore_target`, in today's layout (a streak of 0)."""
    streak = abstract_state.loss_scale.skipped_in_a_row
    zero = jax.device_put(np.zeros(streak.shape, streak.dtype), streak.sharding)
    old = state.loss_scale
    return dataclasses.replace(state, loss_scale=type(abstract_state.loss_scale)(
        old.scale, old.good_steps, old.skipped, zero))


# What every complete step holds, and the JSON files orbax writes: checked by name (and
# parsed) where a step has no manifest.
STEP_FILES = ("_CHECKPOINT_METADATA", "commit_success.txt", "state/_METADATA",
              "state/manifest.ocdbt")
STEP_JSON = ("_CHECKPOINT_METADATA", "state/_METADATA", "identity/metadata", "input/metadata")


def check_step_without_manifest(step_dir: str, present: set, missing, read_json) -> None:
    """A step saved before manifests: `missing(rel)` for a required file not `present`,
    `read_json(rel)` for each JSON file (both raise DamagedCheckpoint)."""
    for rel in STEP_FILES:
        if rel not in present:
            missing(rel)
    for rel in STEP_JSON:
        if rel in STEP_FILES or rel in present:
            read_json(rel)
