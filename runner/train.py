"""The one way to train: `train(run, model_dir)` for a validated Run.

tools.train, tools.sweep, tools.wikispell_compare and tools.quickstart all end here with a
Run value. Before anything is written into model_dir, every check that could refuse the run
passes: the directory is writable, the mesh fits the devices, the trainer's sharding checks,
the initial params match the model and a model_dir of another model is refused untouched.
Resumes from model_dir's latest complete checkpoint; SIGTERM saves and returns.
"""

from __future__ import annotations

import itertools
import os

import numpy as np

from runner.run import Run


def check_model_dir(model_dir: str) -> None:
    import jax

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


def padded(batches, batch_size: int):
    """Pad a finite feed's last, short batch with zero rows (zero loss weight)."""
    for batch in batches:
        n = next(iter(batch.values())).shape[0]
        if n < batch_size:
            batch = {k: np.concatenate([v, np.zeros((batch_size - n,) + v.shape[1:], v.dtype)])
                     for k, v in batch.items()}
        yield batch


def feeds(run: Run):
    """(make_feed(input_state), make_eval_feed or None) for the loop."""
    from tasks.feeding import HostFeed

    def make_feed(state):
        return HostFeed.restore(run.feed, state) if state else HostFeed(run.feed)

    if run.eval_feed is None:
        return make_feed, None

    def make_eval():
        feed = HostFeed(run.eval_feed)
        return padded(itertools.islice(feed, run.eval_batches),
                      run.eval_feed.batch_size // feed.process_count)

    return make_feed, make_eval


def _write(model_dir: str, texts: dict[str, str]) -> None:
    for name, text in texts.items():
        with open(os.path.join(model_dir, name), "w") as f:
            f.write(text)


def train(run: Run, model_dir: str, progress: bool | None = None,
          records: dict[str, str] | None = None) -> dict:
    """Train `run` in model_dir; returns a JSON-able summary (last train and eval metrics).

    `records` ({file name: text}, e.g. the gin config) are written into model_dir by host 0,
    a value that is a function after training. `progress`: see training.loop.run.
    """
    from partitioning.cpu_devices import request_cpu_devices

    request_cpu_devices(run.mesh)  # before JAX starts its backends

    import jax

    import partitioning
    from model_zoo.identity import identity_of
    from runner.initial_params import initial_params
    from runner.trained_model import write_model_json
    from training.checkpoints import Checkpointer
    from training.loop import run as run_loop
    from training.trainer import Trainer

    check_model_dir(model_dir)
    trainer = Trainer(run.model, run.trainer, partitioning.make_mesh(run.mesh))
    make_feed, make_eval = feeds(run)
    initial = initial_params(run, trainer)
    identity = identity_of(run.model)
    # Refuse a model_dir of another model before writing anything into it.
    Checkpointer(os.path.join(model_dir, "checkpoints"), async_save=False,
                 identity=identity).check_identity()
    primary = jax.process_index() == 0
    if primary:
        _write(model_dir, {k: v for k, v in (records or {}).items() if isinstance(v, str)})
        write_model_json(model_dir, run.model, run.feed.mixture_or_task_name, run.lengths)
    result = run_loop(trainer, run.loop, model_dir, make_feed, make_eval, identity=identity,
                      initial_params=initial, progress=progress)
    if primary:
        _write(model_dir, {k: v() for k, v in (records or {}).items() if callable(v)})
    train_metrics = {k: v for k, v in result.get("metrics", {}).items()
                     if k in ("loss", "accuracy")}
    eval_metrics = {f"eval/{k}": v for k, v in result.get("eval_metrics", {}).items()
                    if k in ("loss", "accuracy")}
    return {"model_dir": os.path.abspath(model_dir), "step": result["step"],
            "preempted": result["preempted"], "resumed": result["resumed"],
            **train_metrics, **eval_metrics}
