"""Time to first batch when a feed resumes at a position: what `tools.bench --resume TASK`
reports (a library for that CLI; no command line of its own).

Each position is timed in a fresh process, as a restarted run meets it: imports first
(not timed), then from `HostFeed(config, position=N)` to its first batch. With
--cache_dir the feed reads that task cache by index; without, the live seqio pipeline
replays N batches.
"""

from __future__ import annotations

import time

from experiments.perf.fresh_process import run_fresh


def _first_batch_seconds(config, position: int, queue) -> None:
    import tasks  # noqa: F401  (imports and registration are not timed)
    from tasks.feeding.host_feed import HostFeed

    t0 = time.perf_counter()
    next(HostFeed(config, 0, 1, position=position))
    queue.put(time.perf_counter() - t0)


def time_to_first_batch(config, position: int) -> float:
    return run_fresh(_first_batch_seconds, config, position)


def bench_resume(args):
    """One row per position, yielded as each is measured."""
    from tasks.feed_config import FeedConfig

    lengths = {"inputs": args.inputs, "targets": args.targets}
    config = FeedConfig(args.resume, lengths, args.batch, seed=0, cache_dir=args.cache_dir)
    for position in args.positions:
        yield {"mode": "resume", "task": args.resume, "batch": args.batch,
               "inputs": args.inputs, "targets": args.targets,
               "source": "cache" if args.cache_dir else "live", "position": position,
               "first_batch_s": round(time_to_first_batch(config, position), 3)}
