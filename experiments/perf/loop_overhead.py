"""The whole train loop against the bare step, in one process: what `tools.bench --loop TASK`
reports (a library for that CLI; no command line of its own).

The bare step is the jitted train step on one batch already on the devices, dispatched
back to back. The loop is `training.loop.run` as a run uses it: the task's per-host feed
(seqio, so this imports TensorFlow), device prefetch, preemption agreement, a log step
every `--steps` steps, a checkpoint only at the end. Both use the same Trainer, so the
loop reuses the step the bare timing compiled. The loop's time is its second log interval
(steps + 1 .. 2 * steps: after the feed's start-up, ending on a log step's device_get).
tokens/s counts inputs + targets of the full shapes in both, so the ratio is the step
times' ratio: the share of the step's speed that the loop keeps.
"""

from __future__ import annotations

import tempfile
import time

import jax

from experiments.perf.train_step import setup


def _bare_step_seconds(trainer, batch: dict, steps: int, warmup: int) -> float:
    state = trainer.init_state()
    batch = trainer.shard_batch(batch)
    for _ in range(max(warmup, 1)):  # at least one: compiles the step the loop then reuses
        state, metrics = trainer.train_step(state, batch)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = trainer.train_step(state, batch)
    jax.block_until_ready(metrics)
    return (time.perf_counter() - t0) / steps


def bench_loop(args, preset_name: str) -> dict:
    from tasks.feed_config import FeedConfig
    from tasks.feeding.host_feed import HostFeed
    from training.loop import LoopConfig, run

    cfg, trainer, batch = setup(args, preset_name)
    bare_s = _bare_step_seconds(trainer, batch, args.steps, args.warmup)
    feed = FeedConfig(args.loop, {"inputs": args.inputs, "targets": args.targets}, args.batch,
                      seed=0)
    loop = LoopConfig(train_steps=2 * args.steps, log_every=args.steps,
                      checkpoint_every=2 * args.steps, prefetch=args.prefetch)
    with tempfile.TemporaryDirectory() as model_dir:
        result = run(trainer, loop, model_dir, lambda state: HostFeed(feed, position=0),
                     progress=False)
    loop_s = result.metrics["seconds_per_step"]
    tokens = args.batch * (args.inputs + args.targets)
    return {"impl": "t5pod", "mode": "loop", "model": preset_name, "task": args.loop,
            "dtype": args.dtype, "batch": args.batch, "inputs": args.inputs,
            "targets": args.targets, "prefetch": args.prefetch, "steps": args.steps,
            "devices": trainer.mesh.devices.size,
            "device_kind": trainer.mesh.devices.flat[0].device_kind,
            "step_time_s": round(bare_s, 5), "loop_step_time_s": round(loop_s, 5),
            "tokens_per_s": round(tokens / bare_s, 1),
            "loop_tokens_per_s": round(tokens / loop_s, 1),
            "loop_vs_step": round(bare_s / loop_s, 3), "jax": jax.__version__}
