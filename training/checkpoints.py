"""Orbax checkpoints of the train state plus the input position and the model's identity.

A CheckpointManager writes asynchronously and keeps the last N. Orbax finalises a step
by renaming its temporary directory, so a write that was cut off is never listed and the
previous complete step is what restores. Restores take target shardings, so a checkpoint
written on one mesh loads onto any other.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from training.loss_scale import LegacyLossScaleState
from training.train_state import TrainState


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3, async_save: bool = True,
                 identity: dict | None = None):
        """`identity` (e.g. the model config) is stored with every step and checked on restore."""
        if keep < 1:
            raise ValueError(f"keep={keep} must be >= 1 checkpoints")
        self.directory = os.path.abspath(directory)
        self.identity = identity or {}
        self._check_writable()
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, enable_async_checkpointing=async_save, create=True))

    def _check_writable(self) -> None:
        parent = self.directory
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.access(parent, os.W_OK):
            raise PermissionError(f"checkpoint directory {self.directory} is not writable "
                                  f"({parent} refuses writes)")

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def check_identity(self, step: int | None = None) -> None:
        """Refuse a directory whose checkpoints belong to a different model."""
        step = self.latest_step() if step is None else step
        if step is None or not self.identity:
            return
        path = os.path.join(self.directory, str(step), "identity", "metadata")
        if not os.path.exists(path):
            return
        with open(path) as f:
            stored = json.load(f)
        diff = {k: (stored.get(k), self.identity.get(k)) for k in set(stored) | set(self.identity)
                if stored.get(k) != self.identity.get(k)}  # a key one side lacks reads as None
        if diff:
            raise ValueError(f"{self.directory} holds checkpoints of a different model "
                             f"(field: (stored, requested) = {diff}); use another directory. "
                             "Nothing was overwritten.")

    def save(self, step: int, state: TrainState, input_state: dict | None = None,
             force: bool = False) -> bool:
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            input=ocp.args.JsonSave(input_state or {}),
            identity=ocp.args.JsonSave(self.identity)), force=force)

    def restore(self, abstract_state: TrainState, step: int | None = None):
        """(state, input_state) of `step` (default latest) laid out as `abstract_state` says."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        self.check_identity(step)
        legacy = not self._counts_skip_streaks(step)
        target = abstract_state if not legacy else dataclasses.replace(
            abstract_state, loss_scale=LegacyLossScaleState.of(abstract_state.loss_scale))
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), input=ocp.args.JsonRestore()))
        state = restored.state
        if legacy:  # written before LossScaleState.skipped_in_a_row: the streak starts at 0
            streak = abstract_state.loss_scale.skipped_in_a_row
            state = dataclasses.replace(state, loss_scale=state.loss_scale.upgrade(
                jax.device_put(np.zeros(streak.shape, streak.dtype), streak.sharding)))
        return state, dict(restored.input or {})

    def _counts_skip_streaks(self, step: int) -> bool:
        """Whether the checkpoint's loss-scale state has `skipped_in_a_row`."""
        path = epath.Path(os.path.join(self.directory, str(step), "state"))
        try:
            tree = ocp.StandardCheckpointHandler().metadata(path).tree
            return "skipped_in_a_row" in tree["loss_scale"]
        except (KeyError, TypeError, AttributeError, FileNotFoundError, ValueError):
            return True  # no metadata to tell: restore as the current layout

    def restore_params(self, abstract_params, step: int | None = None):
        """Only the params (fine-tuning): the optimizer state is never read."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        self.check_identity(step)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item={"params": abstract_params},
                restore_args=jax.tree.map(_restore_arg, {"params": abstract_params}),
                partial_restore=True)))
        return restored.state["params"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _restore_arg(x):
    return ocp.ArrayRestoreArgs(sharding=x.sharding, global_shape=x.shape, dtype=x.dtype)


def abstract_with_shardings(abstract, shardings):
    """ShapeDtypeStructs carrying the target shardings, for restore."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        abstract, shardings)
