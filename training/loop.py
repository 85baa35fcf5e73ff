"""The train loop: resume, step, log, evaluate, checkpoint, and stop cleanly on SIGTERM.

The loop is data-agnostic: it calls `make_feed(input_state)` for an iterator of host-local
numpy batches that also has `.state()` (a JSON-able position), so a resumed run continues
with exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
import time
from typing import Callable, Iterable

import jax
import numpy as np

from training.checkpoints import Checkpointer
from training.metrics_writer import MetricsWriter
from training.trainer import Trainer


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    train_steps: int
    checkpoint_every: int = 1000
    eval_every: int = 0          # 0: only at the end when an eval feed is given
    log_every: int = 10
    keep_checkpoints: int = 3
    async_checkpoints: bool = True

    def __post_init__(self):
        for name in ("train_steps", "checkpoint_every", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"LoopConfig.{name}={getattr(self, name)} must be >= 1")
        if self.eval_every < 0:
            raise ValueError(f"LoopConfig.eval_every={self.eval_every} must be >= 0")


class _Preemption:
    """Turns SIGTERM into a flag the loop checks after each step."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def agreed(self) -> bool:
        """True on every host once any host got SIGTERM (all hosts must save together)."""
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.array(self.requested))
        self.requested = bool(np.any(flags))
        return self.requested

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False


def evaluate(trainer: Trainer, params, batches: Iterable[dict]) -> dict:
    """Per-token means over every batch of a (finite) eval feed."""
    totals = None
    for batch in batches:
        sums = jax.device_get(trainer.eval_step(params, batch))
        totals = sums if totals is None else {k: totals[k] + sums[k] for k in sums}
    if totals is None:
        raise ValueError("the eval feed yielded no batches")
    weight = max(float(totals["weight"]), 1.0)
    return {"loss": float(totals["loss"]) / weight, "z_loss": float(totals["z_loss"]) / weight,
            "accuracy": float(totals["correct"]) / weight, "tokens": float(totals["weight"])}


def run(trainer: Trainer, config: LoopConfig, model_dir: str,
        make_feed: Callable[[dict | None], object],
        make_eval_feed: Callable[[], Iterable[dict]] | None = None,
        identity: dict | None = None, initial_params=None, progress: bool | None = None) -> dict:
    """Train to `config.train_steps`, resuming from the latest complete checkpoint in model_dir.

    `progress`: None shows a bar on a terminal and a line per log step otherwise; True a bar;
    False nothing. The result holds the last train and eval metrics.
    """
    ckpt = Checkpointer(f"{model_dir}/checkpoints", keep=config.keep_checkpoints,
                        async_save=config.async_checkpoints, identity=identity)
    ckpt.check_identity()
    abstract = trainer.abstract_state()
    latest = ckpt.latest_step()
    if latest is not None:
        state, input_state = ckpt.restore(abstract, latest)
        print(f"resumed from {ckpt.directory}/{latest}", file=sys.stderr)
    else:
        state, input_state = trainer.init_state(), None
        if initial_params is not None:  # all params, or some top-level ones (hybrid parts)
            state.params = {**state.params, **jax.device_put(
                initial_params, {k: trainer.state_shardings.params[k] for k in initial_params})}
    step = int(jax.device_get(state.step))
    if step >= config.train_steps:
        ckpt.close()
        return {"step": step, "preempted": False, "resumed": latest is not None}
    feed = make_feed(input_state)
    primary = jax.process_index() == 0  # host 0 alone logs; all hosts write checkpoints
    writer = MetricsWriter(model_dir, primary=primary)
    bar = _progress(progress, step, config.train_steps) if primary else None
    lines = primary and progress is None and bar is None
    last, last_eval = {}, {}
    t0, logged_at = time.perf_counter(), step
    saved = set(ckpt.all_steps())
    with _Preemption() as preemption:
        try:
            while step < config.train_steps:
                state, metrics = trainer.train_step(state, next(feed))
                step += 1
                if step % config.log_every == 0 or step == config.train_steps:
                    last = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    last["seconds_per_step"] = (time.perf_counter() - t0) / (step - logged_at)
                    t0, logged_at = time.perf_counter(), step
                    writer.write(step, last)
                    if bar is not None:
                        bar.set_postfix(loss=f"{last['loss']:.3f}")
                    elif lines:
                        print(f"step {step}/{config.train_steps}: loss {last['loss']:.4f}, "
                              f"accuracy {last.get('accuracy', float('nan')):.4f}, "
                              f"{last['seconds_per_step']:.3f} s/step", file=sys.stderr,
                              flush=True)
                if bar is not None:
                    bar.update(1)
                if step % config.checkpoint_every == 0 or step == config.train_steps:
                    ckpt.save(step, state, feed.state())
                    saved.add(step)
                if make_eval_feed is not None and (
                        (config.eval_every and step % config.eval_every == 0)
                        or step == config.train_steps):
                    last_eval = evaluate(trainer, state.params, make_eval_feed())
                    writer.write(step, last_eval, prefix="eval/")
                    if lines:
                        print(f"step {step}: eval loss {last_eval['loss']:.4f}, accuracy "
                              f"{last_eval['accuracy']:.4f}", file=sys.stderr, flush=True)
                if preemption.agreed():
                    if step not in saved:
                        ckpt.save(step, state, feed.state(), force=True)
                    print(f"SIGTERM: saved step {step} to {ckpt.directory}", file=sys.stderr)
                    break
        finally:
            ckpt.close()
            writer.close()
            if bar is not None:
                bar.close()
    return {"step": step, "preempted": preemption.requested, "resumed": latest is not None,
            "metrics": last, "eval_metrics": last_eval, "state": state}


def _progress(enabled: bool | None, start: int, total: int):
    """A tqdm bar when asked for, or by default on a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

