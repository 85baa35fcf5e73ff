"""Run a function in a fresh (spawned) Python process and return what it puts on a queue:
for benchmarks that must start cold or pin their own cores (tools.bench --feed, --resume)."""

from __future__ import annotations

import multiprocessing
import queue as queues


def run_fresh(target, *args, poll_s: float = 5.0):
    """`target(*args, queue)` in a spawned process; its first queue item, or a RuntimeError
    if the process ends without one."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=target, args=(*args, queue))
    child.start()
    try:
        while True:
            try:
                return queue.get(timeout=poll_s)
            except queues.Empty:
                if not child.is_alive():
                    raise RuntimeError(f"{getattr(target, '__name__', target)} exited with "
                                       f"code {child.exitcode} before reporting") from None
    finally:
        child.join(timeout=60)
