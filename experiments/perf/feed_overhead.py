"""One host's feed against the train step it feeds: what `tools.bench --feed TASK` reports
(a library for that CLI; no command line of its own).

The step is timed first, bare, on a synthetic batch of the given preset, mesh and lengths:
it consumes `batch / process_count` rows per host per step. Then, for 1, 2 and all of this
machine's cores, a fresh process pinned to that many cores (sched_setaffinity, before
TensorFlow starts) runs the task's HostFeed with that many preprocessing threads
(tf.data's pool, or Grain's readers for a cache) and times `--steps` batches after two
of warm-up. Rows give non-padding tokens/s and `feed_vs_step`: feed batches/s over step
batches/s (above 1: the feed keeps up). The two are timed apart; on a CPU-only machine a
real run shares the cores between them.
"""

from __future__ import annotations

import os
import time

from experiments.perf.fresh_process import run_fresh


def _feed_rate(config, cores: int, batches: int, queue) -> None:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])
    import dataclasses

    import tasks  # noqa: F401
    from tasks.feeding.host_feed import HostFeed

    feed = HostFeed(dataclasses.replace(config, read_threads=cores), 0, 1)
    next(feed), next(feed)
    tokens, t0 = 0, time.perf_counter()
    for _ in range(batches):
        batch = next(feed)
        tokens += int((batch["encoder_input_tokens"] > 0).sum()
                      + (batch["decoder_target_tokens"] > 0).sum())
    queue.put((batches / (time.perf_counter() - t0), tokens / batches))


def feed_rate(config, cores: int, batches: int) -> tuple[float, float]:
    """(batches/s, non-padding tokens per batch) of one host's feed on `cores` cores."""
    return run_fresh(_feed_rate, config, cores, batches)


def core_counts() -> list[int]:
    every = len(os.sched_getaffinity(0))
    return sorted({1, min(2, every), every})


def bench_feed(args, preset_name: str) -> list[dict]:
    import jax

    from tasks.feed_config import FeedConfig
    from experiments.perf.loop_overhead import _bare_step_seconds
    from experiments.perf.train_step import setup

    cfg, trainer, batch = setup(args, preset_name)
    step_s = _bare_step_seconds(trainer, batch, args.steps, args.warmup)
    local = args.batch // jax.process_count()
    config = FeedConfig(args.feed, {"inputs": args.inputs, "targets": args.targets}, local,
                        seed=0, cache_dir=args.cache_dir)
    rows = []
    for cores in core_counts():
        rate, tokens = feed_rate(config, cores, args.feed_batches)
        rows.append({"mode": "feed", "task": args.feed, "source":
                     "cache" if args.cache_dir else "live", "model": preset_name,
                     "batch_per_host": local, "inputs": args.inputs, "targets": args.targets,
                     "mesh": args.mesh, "cores": cores, "feed_batches_per_s": round(rate, 2),
                     "feed_tokens_per_s": round(rate * tokens, 1),
                     "step_batches_per_s": round(1 / step_s, 2),
                     "step_tokens_per_s": round(tokens / step_s, 1),
                     "feed_vs_step": round(rate * step_s, 2),
                     "devices": trainer.mesh.devices.size, "jax": jax.__version__})
    return rows
