"""The one way to train: `train(run, model_dir)` for a validated Run.

tools.train, tools.sweep, tools.wikispell_compare and tools.quickstart all end here with a
Run value. The run lock is taken once, here, before anything is checked or written, and
nothing is written into model_dir before every check that could refuse the run passed:
the checkpoints are of this model, input stream and not past TRAIN_STEPS
(runner/resume_check.py), the mesh fits the devices, the trainer's sharding checks, the
initial params match the model, the evaluators read their data (runner/evaluators.py), and
the loop restored a step that verifies; config.gin and model.json are written only then.
Resumes from model_dir's newest good checkpoint; a model_dir already at TRAIN_STEPS trains
nothing (the loop runs the final evals that are missing). SIGTERM saves and returns; before
the loop runs it returns with nothing trained (runner/startup_sigterm.py).
"""

from __future__ import annotations

import logging
import os

from fields import paths
from runner.resume_check import checkpointed_step
from runner.run import Run
from runner.startup_sigterm import forward as forward_sigterm
from runner.startup_sigterm import requested as sigterm_requested
from runner.startup_sigterm import startup_sigterm
from training.loop_result import LoopResult
from training.run_dir import RunDir

logger = logging.getLogger(__name__)


def check_model_dir(model_dir) -> None:
    """Refuse a model_dir nothing can be written into: a local directory that refuses a
    write, a bucket that does not exist or refuses this run, or s3:// (no checkpoints)."""
    import jax

    model_dir = RunDir.of(model_dir).path
    if paths.is_bucket(model_dir):
        from fields.conditional_writes import bucket_problem
        from training.checkpoints.manager import refuse_s3

        refuse_s3(model_dir, "--model_dir")
        problem = bucket_problem(model_dir)
        if problem:
            raise OSError(f"model_dir {model_dir} cannot be written: {problem}; nothing was "
                          "started and no checkpoint touched")
        return
    os.makedirs(model_dir, exist_ok=True)
    probe = os.path.join(model_dir, f".t5pod_write_test.{jax.process_index()}")
    try:
        with open(probe, "w") as f:
            f.write("x" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise OSError(f"model_dir {model_dir} is not writable ({e.strerror}); nothing was "
                      "started and no checkpoint touched") from None
    finally:
        if os.path.exists(probe):
            os.remove(probe)


def new_dirs(model_dir) -> list[str]:
    """The local directories a fresh run creates (model_dir, its checkpoints/), outermost
    first (a bucket has no directories)."""
    run_dir = RunDir.of(model_dir)
    if run_dir.on_bucket:
        return []
    return [d for d in (run_dir.path, run_dir.checkpoints) if not os.path.exists(d)]


def remove_if_empty(created: list[str]) -> None:
    """A refused fresh run leaves no empty directory behind (innermost first; a directory
    that holds anything stays)."""
    for d in reversed(created):
        if os.path.isdir(d) and not os.listdir(d):
            os.rmdir(d)


def make_feed_of(run: Run):
    """make_feed(input_state) for the loop: the run's feed, at the saved position if any (a
    tree's BranchFeed: each branch's feed at its own position)."""
    from tasks.feeding.host_feed import HostFeed

    def host_feed(config, state):
        return HostFeed.restore(config, state) if state else HostFeed(config)

    if run.branch_feed is None:
        return lambda state: host_feed(run.feed, state)
    from tasks.feeding.branch_feed import BranchFeed

    feeds = run.feeds_of(run.feed)
    return lambda state: BranchFeed(run.branch_feed, run.model.tree.branches,
                                    lambda b, s: host_feed(feeds[b], s), state)


def _write(model_dir: str, texts: dict[str, str]) -> None:
    for name, text in texts.items():
        paths.write_text(RunDir.of(model_dir).file(name), text)


def train(run: Run, model_dir: str, progress: bool | None = None,
          records: dict[str, str] | None = None) -> LoopResult:
    """Train `run` in model_dir; returns how the loop ended (`.as_json()`: the summary).

    `records` ({file name: text}, e.g. the gin config) are written into model_dir by host 0,
    a value that is a function after training. `progress`: see training.loop.run.
    """
    from partitioning.cpu_devices import request_cpu_devices

    model_dir = RunDir.of(model_dir).path  # a bad path is refused before anything starts
    request_cpu_devices(run.mesh)  # before JAX starts its backends

    import jax

    from training.checkpoints.lock import hold

    with startup_sigterm():
        if sigterm_requested():
            return _nothing_trained(model_dir, None)
        created = new_dirs(model_dir)
        check_model_dir(model_dir)
        primary = jax.process_index() == 0
        try:
            with hold(model_dir, primary):  # once per run, before the first check or write
                return _train(run, model_dir, progress, records or {}, primary)
        except BaseException:
            if primary:
                remove_if_empty(created)
            raise


def _train(run: Run, model_dir: str, progress, records: dict, primary: bool) -> LoopResult:
    import partitioning
    from model_zoo.identity import identity_of
    from runner.evaluators import evaluators
    from runner.initial_params import initial_params
    from training.loop import run as run_loop
    from training.trainer import Trainer

    identity = identity_of(run.model)
    resume_step = checkpointed_step(run, model_dir, identity)  # refuses before any write
    trainer = Trainer(run.model, run.trainer, partitioning.make_mesh(run.mesh))
    if sigterm_requested():
        return _nothing_trained(model_dir, resume_step)
    # Resuming restores the params; the initial checkpoint is read only for a fresh start.
    initial = initial_params(run, trainer) if resume_step is None else None
    if sigterm_requested():
        return _nothing_trained(model_dir, resume_step)
    on_start = RunStart(run, model_dir, records, primary)
    evals = evaluators(run, trainer)  # each reads (and checks) its data here, before any write
    result = run_loop(trainer, run.loop, model_dir, make_feed_of(run), evals, identity=identity,
                      initial_params=initial, progress=progress, on_start=on_start)
    if primary and on_start.started:
        _write(model_dir, {k: v() for k, v in records.items() if callable(v)})
    return result


class RunStart:
    """The loop's `on_start(step)`: host 0 writes the records that are text (config.gin)
    and model.json once the run is accepted (the loop restored a step that verifies, the
    feed took its saved position), before the first step; a resume rewrites them. Then a
    SIGTERM that came after the last check goes to the loop's handler."""

    def __init__(self, run: Run, model_dir: str, records: dict, primary: bool):
        self.run, self.model_dir, self.records, self.primary = run, model_dir, records, primary
        self.started = False

    def __call__(self, step: int) -> None:
        from training.checkpoints.model_json import write_model_json

        self.started = True
        run = self.run
        if self.primary:
            _write(self.model_dir, {k: v for k, v in self.records.items() if isinstance(v, str)})
            write_model_json(self.model_dir, run.model, run.feed.mixture_or_task_name,
                             run.lengths, run.branch_feed.tasks if run.branch_feed else None)
        forward_sigterm()


def _nothing_trained(model_dir: str, step: int | None) -> LoopResult:
    logger.info(f"SIGTERM before training started: nothing was trained yet and nothing written in "
                f"{model_dir}" + (f" (its checkpoints stay at step {step})" if step else ""))
    return LoopResult(model_dir, step or 0, "preempted")
