"""What a model_dir's checkpoints allow a run, decided before anything is written into it.

A run may resume only checkpoints of its own model (identity), of its own input stream
(task, lengths, batch size, split, seed, packing: the saved input position must replay the
same examples) and below its TRAIN_STEPS. Reading the step list, the identity and the input
position is cheap (JSON); a step's checksums are read only when the run would end there.
"""

from __future__ import annotations

import jax

from fields import paths
from runner.run import Run
from tasks.feeding.host_feed import check_position
from training.checkpoints.host_state import read as read_host_state
from training.checkpoints.verify import DamagedCheckpoint
from training.checkpoints.manager import Checkpointer
from training.run_dir import RunDir


def _check_position(run: Run, position: dict) -> None:
    if run.branch_feed is None:
        check_position(run.feed, position, jax.process_count())
        return
    from tasks.feeding.branch_feed import check_state

    check_state(run.branch_feed, run.model.tree.branches, position)
    feeds = run.feeds_of(run.feed)
    for branch, saved in position["feeds"].items():
        check_position(feeds[branch], saved, jax.process_count())


def checkpointed_step(run: Run, model_dir: str, identity: dict) -> int | None:
    """The step this run would resume from (None: nothing to resume), or a ValueError that
    says why the model_dir's checkpoints refuse it. Writes nothing."""
    directory = RunDir.of(model_dir).checkpoints
    if not paths.isdir(directory):
        return None
    ckpt = Checkpointer(directory, async_save=False, identity=identity, read_only=True)
    try:
        ckpt.check_identity()
        steps = ckpt.all_steps()
        if not steps:
            return None
        _check_input_position(run, ckpt, steps)
        return _step_within(run, ckpt, steps)
    finally:
        ckpt.close()


def _check_input_position(run: Run, ckpt: Checkpointer, steps: list[int]) -> None:
    for step in reversed(steps):
        try:
            position = read_host_state(paths.join(ckpt.step_dir(step), "input"),
                                       jax.process_index(), jax.process_count())
        except (OSError, ValueError):
            continue  # the restore reports it (and falls back)
        if position:
            try:
                _check_position(run, position)
            except ValueError as e:
                raise ValueError(f"cannot resume {ckpt.step_dir(step)}: {e} Nothing in the "
                                 "model_dir was changed.") from None
        return


def _step_within(run: Run, ckpt: Checkpointer, steps: list[int]) -> int:
    """The newest step if below TRAIN_STEPS; else the newest that verifies, which must not be
    past TRAIN_STEPS (the run would silently do nothing)."""
    train_steps = run.loop.train_steps
    if steps[-1] < train_steps:
        return steps[-1]
    for step in reversed(steps):
        try:
            ckpt.verify(step)
        except DamagedCheckpoint:
            continue
        if step > train_steps:
            raise ValueError(
                f"TRAIN_STEPS={train_steps} (training.LoopConfig.train_steps) is below step "
                f"{step} already checkpointed in {ckpt.directory}: nothing would be trained. "
                f"Set TRAIN_STEPS above {step} to train on, or use another model_dir. Nothing "
                "in the model_dir was changed.")
        return step
    return steps[-1]  # every step is damaged: the restore says so, naming them
