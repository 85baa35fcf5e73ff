"""The train loop: resume, step, log, evaluate, checkpoint, and stop cleanly on SIGTERM.

The loop is data-agnostic: it calls `make_feed(input_state)` for an iterator of host-local
numpy batches that also has `.state()` (a JSON-able position), so a resumed run continues
with exactly the batches an uninterrupted run would have seen.

Between two steps that neither log, checkpoint nor evaluate, the host waits for nothing:
steps are dispatched asynchronously, the next `prefetch` batches are already on the devices
(training/prefetch.py), and no collective runs for preemption. All hosts still stop at the
same step on SIGTERM to any of them; how they agree (`LoopConfig.preemption_sync`):

- one process: a flag set by our SIGTERM handler, read after every step (no collective);
- "service" (the default on several processes when JAX's preemption sync manager is up,
  which `jax.distributed.initialize` starts): `multihost_utils.reached_preemption_sync_point`
  after every step, a local check. The coordination service's own SIGTERM handler (C++,
  installed by `jax.distributed.initialize`) tells the service; the service computes a step
  every host reaches (the fastest host's + 1), in the background, about 1 s after the signal
  (its notifier polls once a second). A Python SIGTERM handler installed later in the process
  replaces that handler and silently disables this mode, so here the loop installs none; a
  SIGTERM before the first `reached_preemption_sync_point` call of a resumed run sets a sync
  point that is never reached (the run is then killed and resumes from its last checkpoint).
  Checked with jax 0.10.2 on CPU with gloo (tests/test_multihost.py).
- "collective": our handler's flag, gathered across hosts (`process_allgather`) after every
  `preemption_check_every`-th step and after every log, checkpoint and eval step, where hosts
  wait for the devices anyway. The same steps on every host, so the same collectives.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import threading
from typing import Callable

import jax
import numpy as np

from fields.choices import require_choice
from fields.integers import require_int
from training.checkpoints.manager import Checkpointer
from training.evaluator import checked, missing_at, run_one
from training.loop_result import LoopResult
from training.metrics_writer import MetricsWriter
from training.run_dir import RunDir
from training.prefetch import DevicePrefetch
from training.throughput import Throughput
from training.trainer import Trainer

logger = logging.getLogger(__name__)


PREEMPTION_SYNCS = ("auto", "service", "collective")


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """`max_consecutive_skipped_steps`: stop with SkippedStepsError once that many steps in
    a row were skipped for non-finite grads (0: never). The count lives on the device and
    is read on log steps, so the stop comes at the first log step at or after the N-th
    skip (at most log_every - 1 steps later).

    `prefetch`: global batches placed on the devices ahead of the step (0: off).
    `preemption_sync`: how hosts agree to stop on SIGTERM, one of PREEMPTION_SYNCS (see the
    module docstring); `preemption_check_every`: for "collective", gather the flag at least
    every that many steps.
    `peak_tflops_per_device`: the chip's peak for MFU (None: training/throughput.py's table,
    and no MFU on a chip it lacks, e.g. a CPU)."""

    train_steps: int
    checkpoint_every: int = 1000
    eval_every: int = 0          # 0: only at the end (when there are evaluators)
    log_every: int = 10
    keep_checkpoints: int = 3
    async_checkpoints: bool = True
    max_consecutive_skipped_steps: int = 100
    prefetch: int = 2
    preemption_sync: str = "auto"
    preemption_check_every: int = 100
    peak_tflops_per_device: float | None = None

    def __post_init__(self):
        require_choice("LoopConfig", "preemption_sync", self.preemption_sync, PREEMPTION_SYNCS)
        for name in ("train_steps", "checkpoint_every", "log_every", "keep_checkpoints",
                     "preemption_check_every"):
            require_int("LoopConfig", name, getattr(self, name), 1)
        for name in ("eval_every", "max_consecutive_skipped_steps", "prefetch"):
            require_int("LoopConfig", name, getattr(self, name), 0, meaning="0: off")
        peak = self.peak_tflops_per_device
        if peak is not None and (isinstance(peak, bool) or not isinstance(peak, (int, float))
                                 or not peak > 0):
            raise ValueError(f"LoopConfig.peak_tflops_per_device={peak!r} is invalid: expected "
                             "a number > 0 (the device's peak TFLOP/s) or None")


class SkippedStepsError(RuntimeError):
    """Every one of the last N steps had non-finite grads, so none changed the params."""


def check_skipped_steps(trainer: Trainer, limit: int, step: int, metrics: dict) -> None:
    """Raise SkippedStepsError when `metrics` (host floats) show `limit` skips in a row."""
    streak = int(metrics.get("skipped_in_a_row", 0))
    if not limit or streak < limit:
        return
    dtype, ls = trainer.compute_dtype, trainer.loss_scale
    if ls.dynamic:
        scale = metrics.get("loss_scale", float("nan"))
        where = (f"the loss scale is at its floor {ls.floor:g}" if scale <= ls.floor
                 else f"the loss scale is {scale:g}")
    else:
        where = "no loss scaling is applied"
    raise SkippedStepsError(
        f"step {step}: the last {streak} steps were all skipped because their gradients were "
        f"not finite (inf or nan); {where}, compute dtype {dtype}. The params have not changed "
        f"since step {step - streak}. Try: dtype='bfloat16' (float32's range, no loss "
        "scaling) or 'float32'; a lower learning rate, a longer warmup or "
        "OptimizerConfig.grad_clip_norm, if the weights grew until the forward overflowed; "
        "in float16, activations above 65504 overflow (T5's residual stream is already "
        "clamped as HF clamps it). To keep going anyway: "
        f"LoopConfig.max_consecutive_skipped_steps=0 (now {limit}).")


def _gather_flag(flag: bool) -> bool:
    """True on every host if it is on any: the one cross-host collective of the agreement."""
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array(flag))))


def _sync_point(step: int) -> bool:
    from jax.experimental import multihost_utils

    return multihost_utils.reached_preemption_sync_point(step)


def preemption_mode(requested: str) -> str:
    """"local" (one process; "auto" and "service" there), "service" or "collective"."""
    if requested == "collective":
        return requested
    if jax.process_count() == 1:
        return "local"
    try:
        _sync_point(-1)  # probes for the sync manager; the loop then reports its real step
        available = True
    except RuntimeError:  # jax_enable_preemption_service is off
        available = False
    if requested == "service" and not available:
        raise ValueError("LoopConfig.preemption_sync='service' needs JAX's preemption sync "
                         "manager (jax_enable_preemption_service, on by default, before "
                         "jax.distributed.initialize); use 'collective' or 'auto'")
    return "service" if available else "collective"


class _Preemption:
    """Whether to stop now, agreed by every host (see the module docstring for the modes)."""

    def __init__(self, mode: str = "local", every: int = 1):
        self.mode, self.every = mode, every
        self.requested = False  # this host got SIGTERM (local and collective modes)
        self._stop = False      # every host agreed to stop (collective mode)
        self._previous = None
        self._depth = 0  # re-entrant: the loop re-enters the one run() installed

    def __enter__(self):
        self._depth += 1
        if (self._depth == 1 and self.mode != "service"
                and threading.current_thread() is threading.main_thread()):
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def agreed(self, step: int, syncs_anyway: bool = True) -> bool:
        """After `step`: True on every host once any host got SIGTERM. `syncs_anyway`: this
        step logs, checkpoints or evaluates, so a collective here costs no extra wait."""
        if self.mode == "local":
            return self.requested
        if self.mode == "service":
            self.requested = self.requested or _sync_point(step)
            return self.requested
        if syncs_anyway or step % self.every == 0:  # never the host's own flag in between
            self._stop = _gather_flag(self.requested)
            self.requested = self.requested or self._stop
        return self._stop

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0 and self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False


def run(trainer: Trainer, config: LoopConfig, model_dir: str,
        make_feed: Callable[[dict | None], object], evaluators=(),
        identity: dict | None = None, initial_params=None, progress: bool | None = None,
        on_start: Callable[[int], None] | None = None) -> LoopResult:
    """Train to `config.train_steps`, resuming from the newest checkpoint in model_dir that
    verifies. The caller holds model_dir's run lock (training/checkpoints/lock.py; runner.train
    takes it once per run, before its first check). SIGTERM from here on saves the state, or
    exits cleanly if nothing was trained yet.

    `evaluators` (training/evaluator.py: `run(step, params) -> {name: value}`) run on every
    host at every `eval_every`-th step and at `train_steps`, and their metrics are logged as
    they name them. A model_dir already at `train_steps` trains nothing and runs only the
    evaluators whose metrics of that step are missing (a kill cut the final eval off).
    `progress`: None shows a bar on a terminal and a line per log step otherwise; True a bar;
    False nothing.

    `on_start(step)` runs once, on every host, after the resume decision and the feed's
    restore and before the first step: where a run writes its records (runner.train). A run
    that trains nothing (already at `train_steps`, or SIGTERM before the first step) never
    calls it.
    """
    evaluators = checked(evaluators)
    preemption = _Preemption(preemption_mode(config.preemption_sync),
                             config.preemption_check_every)
    with preemption:
        return _run(trainer, config, model_dir, make_feed, evaluators, identity,
                    initial_params, progress, preemption, on_start)


def _evaluate(evaluators, step: int, params, writer: MetricsWriter, lines: bool) -> dict:
    """Every evaluator's metrics of `params`, written at `step`."""
    out = {}
    for ev in evaluators:
        metrics = run_one(ev, step, params)
        writer.write(step, metrics)
        if lines:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            logger.info(f"step {step}: {shown}")
        out.update(metrics)
    return out


def _final_eval(evaluators, model_dir: str, step: int, params, primary: bool) -> dict:
    """At `train_steps` already: the evaluators whose metrics of `step` are missing."""
    logger.info(f"{model_dir} already holds step {step} = TRAIN_STEPS: nothing to train")
    due = missing_at(evaluators, model_dir, step)
    if not due:
        return {}
    names = " and ".join(ev.prefix for ev in due)
    logger.info(f"its final {names} metrics are missing: evaluating step {step}")
    writer = MetricsWriter(model_dir, primary=primary, resume_step=step)
    try:
        return _evaluate(due, step, params, writer, primary)
    finally:
        writer.close()


def _run(trainer, config, model_dir, make_feed, evaluators, identity, initial_params,
         progress, preemption, on_start) -> LoopResult:
    ckpt = Checkpointer(RunDir.of(model_dir).checkpoints, keep=config.keep_checkpoints,
                        async_save=config.async_checkpoints, identity=identity,
                        per_branch=trainer.per_branch)
    ckpt.check_identity()
    abstract = trainer.abstract_state()
    state, input_state, latest = ckpt.restore_newest_good(abstract)
    if latest is not None:
        logger.info(f"resumed from {ckpt.directory}/{latest}")
    else:
        state, input_state = trainer.init_state(), None
        if initial_params is not None:  # all params, or some top-level ones (hybrid parts)
            state.params = {**state.params, **jax.device_put(
                initial_params, {k: trainer.state_shardings.params[k] for k in initial_params})}
    step = int(jax.device_get(state.step))
    primary = jax.process_index() == 0  # host 0 alone logs; all hosts write checkpoints
    if step >= config.train_steps:
        ckpt.close()
        return LoopResult(model_dir, step, "already_done", resumed=latest is not None,
                          eval_metrics=_final_eval(evaluators, model_dir, step, state.params,
                                                   primary))
    if preemption.agreed(step):  # SIGTERM while restoring or initialising: nothing to save
        ckpt.close()
        logger.info(f"SIGTERM before the first step: nothing was trained yet (at step {step})")
        return LoopResult(model_dir, step, "preempted", resumed=latest is not None)
    feed = make_feed(input_state)
    if on_start is not None:
        on_start(step)
    batches = DevicePrefetch(feed, trainer.shard_batch, config.prefetch)
    writer = MetricsWriter(model_dir, primary=primary, resume_step=step)
    bar = _progress(progress, step, config.train_steps) if primary else None
    lines = primary and progress is None and bar is None
    last, last_eval = {}, {}
    meter = Throughput.for_trainer(trainer, config.peak_tflops_per_device, primary)
    saved = set(ckpt.all_steps())
    with preemption:
        try:
            batches.fill(config.train_steps - step)
            while step < config.train_steps:
                batch, feed_state = next(batches)  # the position right after this batch
                state, metrics = trainer.train_step(state, batch)
                meter.step(batch, metrics)
                step += 1
                batches.fill(config.train_steps - step)  # read ahead while the step runs
                ckpt.poll()  # a failed background save stops the run here, at once
                logs = step % config.log_every == 0 or step == config.train_steps
                saves = step % config.checkpoint_every == 0 or step == config.train_steps
                evals = bool(evaluators) and (
                    (config.eval_every and step % config.eval_every == 0)
                    or step == config.train_steps)
                if logs:
                    last = _named_branch(trainer, {k: float(v) for k, v in
                                                   jax.device_get(metrics).items()})
                    last.update(meter.log())
                    writer.write(step, last)
                    if bar is not None:
                        bar.set_postfix({"loss": f"{last['loss']:.3f}", **_speed(last)})
                    elif lines:
                        logger.info(f"step {step}/{config.train_steps}: loss {last['loss']:.4f}, "
                                    f"accuracy {last.get('accuracy', float('nan')):.4f}, "
                                    f"{last['seconds_per_step']:.3f} s/step, "
                                    + ", ".join(f"{k} {v}" for k, v in _speed(last).items()))
                    check_skipped_steps(trainer, config.max_consecutive_skipped_steps, step,
                                        last)
                if bar is not None:
                    bar.update(1)
                if saves or evals:
                    meter.pause(metrics)  # the clock times train steps only
                if saves:
                    ckpt.save(step, state, feed_state)
                    saved.add(step)
                if evals:
                    last_eval = _evaluate(evaluators, step, state.params, writer, lines)
                meter.resume()
                if step < config.train_steps and preemption.agreed(step, logs or saves or evals):
                    if step not in saved:
                        ckpt.save(step, state, feed_state, force=True)
                    logger.info(f"SIGTERM: saved step {step} to {ckpt.directory}")
                    break
        finally:
            ckpt.close()
            writer.close()
            if bar is not None:
                bar.close()
    return LoopResult(model_dir, step, "preempted" if preemption.requested else "done",
                      resumed=latest is not None, metrics=last, eval_metrics=last_eval,
                      state=state)


def _named_branch(trainer: Trainer, metrics: dict) -> dict:
    """A tree's step metrics with its batch's loss and accuracy also as BRANCH/loss, ..."""
    if "branch_index" not in metrics:
        return metrics
    name = trainer.model.tree.branches[int(metrics["branch_index"])]
    return {**metrics, **{f"{name}/{k}": metrics[k] for k in ("loss", "accuracy", "z_loss")}}


def _speed(last: dict) -> dict:
    """The throughput figures for the progress bar or line."""
    out = {"tok/s": f"{last['tokens_per_second']:,.0f}",
           "TFLOP/s/dev": f"{last['tflops_per_device']:.3g}"}
    if "mfu" in last:
        out["MFU"] = f"{100 * last['mfu']:.1f}%"
    return out


def _progress(enabled: bool | None, start: int, total: int):
    """A tqdm bar when asked for, or by default on a terminal."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

