"""The writes a failed orbax save leaves behind, finished while Python still runs.

Orbax runs a save's writes as asyncio tasks on an event loop of its own and, at the first
write that fails (a full disk), closes that loop with the other writes still pending and
the errors of some finished ones never read. Nothing can run them again; left alone, Python
finalises them as it shuts down, when their cleanup can no longer import anything, and
prints dozens of "ImportError: sys.meta_path is None" tracebacks (and asyncio's "exception
was never retrieved") after the run's own error. Settling them here, at once, keeps the
save's error the last thing a user reads.
"""

from __future__ import annotations

import asyncio
import gc
import inspect


def close_abandoned_writes() -> int:
    """On every closed event loop: close the coroutine of each task still pending, and read
    the error of each finished future (the save's error reports them, so asyncio need not
    log them when they are collected). Returns how many coroutines were closed."""
    closed = 0
    for future in _futures_of_closed_loops():
        if not future.done():
            coro = future.get_coro() if isinstance(future, asyncio.Task) else None
            if coro is not None and inspect.getcoroutinestate(coro) != inspect.CORO_CLOSED:
                coro.close()  # runs its cleanup (finally blocks) now
                closed += 1
        elif not future.cancelled():
            future.exception()  # marks it read
    gc.collect()  # what is garbage now is finalised now, not at exit
    return closed


def _futures_of_closed_loops() -> list[asyncio.Future]:
    # issubclass(type(o)): an isinstance check would call __class__ on lazy module proxies
    return [o for o in gc.get_objects() if issubclass(type(o), asyncio.Future)
            and o.get_loop().is_closed()]
