"""The one way to train: `train(run, model_dir)` for a validated Run.

tools.train, tools.sweep, tools.wikispell_compare and tools.quickstart all end here with a
Run value. The run lock is taken before anything is written, and nothing is written into
model_dir before every check that could refuse the run passed: the checkpoints are of
this model, input stream and not past TRAIN_STEPS (runner/resume_check.py), the mesh fits
the devices, the trainer's sharding checks, the initial params match the model, and the loop
restored a step that verifies; config.gin and model.json are written only then. Resumes
from model_dir's newest good checkpoint; a model_dir already at TRAIN_STEPS trains nothing
(and runs the final eval if it is missing). SIGTERM saves and returns; before the loop runs
it returns with nothing trained (runner/startup_sigterm.py).
"""

from __future__ import annotations

import itertools
import os
import sys

import numpy as np

from runner.resume_check import checkpointed_step, has_eval_at
from runner.run import Run
from runner.startup_sigterm import forward as forward_sigterm
from runner.startup_sigterm import requested as sigterm_requested
from runner.startup_sigterm import startup_sigterm


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


def new_dirs(model_dir: str) -> list[str]:
    """The directories a fresh run creates (model_dir, its checkpoints/), outermost first."""
    return [d for d in (model_dir, os.path.join(model_dir, "checkpoints"))
            if not os.path.exists(d)]


def remove_if_empty(created: list[str]) -> None:
    """A refused fresh run leaves no empty directory behind (innermost first; a directory
    that holds anything stays)."""
    for d in reversed(created):
        if os.path.isdir(d) and not os.listdir(d):
            os.rmdir(d)


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

    from training.checkpoints.lock import hold

    with startup_sigterm():
        if sigterm_requested():
            return _nothing_trained(model_dir, None)
        created = new_dirs(model_dir)
        check_model_dir(model_dir)
        primary = jax.process_index() == 0
        try:
            with hold(model_dir, primary):  # before the first write: a refused run changes nothing
                return _train(run, model_dir, progress, records or {}, primary)
        except BaseException:
            if primary:
                remove_if_empty(created)
            raise


def _train(run: Run, model_dir: str, progress, records: dict, primary: bool) -> dict:
    import partitioning
    from model_zoo.identity import identity_of
    from runner.initial_params import initial_params
    from training.checkpoints.model_json import write_model_json
    from training.loop import run as run_loop
    from training.trainer import Trainer

    identity = identity_of(run.model)
    resume_step = checkpointed_step(run, model_dir, identity)  # refuses before any write
    if resume_step is not None and resume_step >= run.loop.train_steps:
        return _already_trained(run, model_dir, resume_step, identity, primary)
    trainer = Trainer(run.model, run.trainer, partitioning.make_mesh(run.mesh))
    if sigterm_requested():
        return _nothing_trained(model_dir, resume_step)
    # Resuming restores the params; the initial checkpoint is read only for a fresh start.
    initial = initial_params(run, trainer) if resume_step is None else None
    if sigterm_requested():
        return _nothing_trained(model_dir, resume_step)
    make_input_feed, make_eval = feeds(run)
    started = []

    def make_feed(input_state):
        """Called by the loop once it restored (or initialised) the state and before it
        writes anything: the saved input position is checked here, then the records go."""
        feed = make_input_feed(input_state)
        started.append(True)
        if primary:
            _write(model_dir, {k: v for k, v in records.items() if isinstance(v, str)})
            write_model_json(model_dir, run.model, run.feed.mixture_or_task_name, run.lengths)
        forward_sigterm()  # one that came after the last check goes to the loop's handler
        return feed

    # the inference eval reads (and checks) its data here, before any write
    evaluate_fn = _inference_eval_fn(run, trainer) if run.inference_eval is not None else None
    result = run_loop(trainer, run.loop, model_dir, make_feed, make_eval, identity=identity,
                      initial_params=initial, progress=progress, evaluate_fn=evaluate_fn)
    if primary and started:
        _write(model_dir, {k: v() for k, v in records.items() if callable(v)})
    return _summary(model_dir, result)


def _summary(model_dir: str, result: dict) -> dict:
    train_metrics = {k: v for k, v in result.get("metrics", {}).items()
                     if k in ("loss", "accuracy")}
    eval_metrics = {f"eval/{k}": v for k, v in result.get("eval_metrics", {}).items()
                    if k in ("loss", "accuracy")}
    infer_metrics = {f"infer_eval/{k}": v for k, v in result.get("infer_eval_metrics",
                                                                 {}).items()}
    return {"model_dir": os.path.abspath(model_dir), "step": result["step"],
            "preempted": result["preempted"], "resumed": result["resumed"],
            **train_metrics, **eval_metrics, **infer_metrics}


def _nothing_trained(model_dir: str, step: int | None) -> dict:
    print(f"SIGTERM before training started: nothing was trained yet and nothing written in "
          f"{model_dir}" + (f" (its checkpoints stay at step {step})" if step else ""),
          file=sys.stderr)
    return {"model_dir": os.path.abspath(model_dir), "step": step or 0, "preempted": True,
            "resumed": False}


def _already_trained(run: Run, model_dir: str, step: int, identity: dict,
                     primary: bool) -> dict:
    """A model_dir already at TRAIN_STEPS: nothing to train; the final eval and inference
    eval are run if a kill cut them off (metrics.jsonl has none for that step)."""
    print(f"{model_dir} already holds step {step} = TRAIN_STEPS: nothing to train",
          file=sys.stderr)
    result = {"step": step, "preempted": False, "resumed": True}

    def missing(configured, prefix: str) -> bool:
        return configured is not None and not _agree(
            has_eval_at(model_dir, step, prefix) if primary else True)

    evals, infer = missing(run.eval_feed, "eval/"), missing(run.inference_eval, "infer_eval/")
    if evals or infer:
        result.update(_final_eval(run, model_dir, step, identity, primary, evals, infer))
    return _summary(model_dir, result)


def _final_eval(run: Run, model_dir: str, step: int, identity: dict, primary: bool,
                evals: bool, infer: bool) -> dict:
    import partitioning
    from training.checkpoints.manager import Checkpointer
    from training.loop import evaluate
    from training.metrics_writer import MetricsWriter
    from training.trainer import Trainer

    which = " and ".join(n for n, on in (("eval", evals), ("inference eval", infer)) if on)
    print(f"its final {which} is missing: evaluating step {step}", file=sys.stderr)
    trainer = Trainer(run.model, run.trainer, partitioning.make_mesh(run.mesh))
    evaluate_fn = _inference_eval_fn(run, trainer) if infer else None  # reads its data first
    ckpt = Checkpointer(os.path.join(model_dir, "checkpoints"), async_save=False,
                        identity=identity)
    try:
        params = ckpt.restore_params(trainer.abstract_state().params, step)
    finally:
        ckpt.close()
    out = {}
    writer = MetricsWriter(model_dir, primary=primary, resume_step=step)
    try:
        if evals:
            out["eval_metrics"] = metrics = evaluate(trainer, params, feeds(run)[1]())
            writer.write(step, metrics, prefix="eval/")
            print(f"step {step}: eval loss {metrics['loss']:.4f}, accuracy "
                  f"{metrics['accuracy']:.4f}", file=sys.stderr)
        if infer:
            out["infer_eval_metrics"] = metrics = evaluate_fn(step, params)
            writer.write(step, metrics, prefix="infer_eval/")
            print(f"step {step}: inference eval {metrics}", file=sys.stderr)
    finally:
        writer.close()
    return out


def _inference_eval_fn(run: Run, trainer):
    """The loop's periodic inference eval (seqio.Evaluator over the training params)."""
    from inference.seqio_evaluator import make_evaluate_fn
    from tasks import settings_scope
    from tasks.feeding import lookup

    vocab = lookup(run.feed.mixture_or_task_name).output_features["targets"].vocabulary
    with settings_scope.active(run.feed.task_settings):  # its data is read here
        return make_evaluate_fn(run.inference_eval, trainer, vocab)


def _agree(flag: bool) -> bool:
    """Process 0's flag on every host."""
    import jax

    if jax.process_count() == 1:
        return flag
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))
