"""One writer per model_dir on a bucket: a lease taken by a conditional create.

A bucket has no flock and no pid to look up, so the lock is an object, `DIR/t5pod.lock`,
written only through conditional writes (fields/conditional_writes.py): taken by creating
it where none exists, refreshed every `REFRESH_S` only while it is still the version this
run wrote, taken over from a holder that stopped refreshing `STALE_AFTER_S` ago (by the
server's clock) only by overwriting exactly the version read. Of two runs racing, one
wins. A holder whose refresh finds another version has lost the lock: it is marked lost,
and the checkpointer refuses every further save (`LockLost`), so two writers never
interleave steps.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid

from fields import conditional_writes as cw
from training.checkpoints.process_alive import dead_pid, start_ticks

logger = logging.getLogger(__name__)

REFRESH_S, STALE_AFTER_S = 60.0, 600.0


class LockLost(RuntimeError):
    """This run's lease was taken over: it must write nothing more into the model_dir."""


def _me() -> bytes:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
                       "start_ticks": start_ticks(os.getpid()), "argv": sys.argv,
                       "run": _RUN}).encode()


_RUN = uuid.uuid4().hex


def _dead_here(data: bytes) -> str | None:
    """Why a holder on this very host is dead (its pid gone or reused), else None: a run
    restarted on the machine it was killed on need not wait for the lease to go stale."""
    try:
        holder = json.loads(data)
        if holder.get("host") != socket.gethostname():
            return None
        return dead_pid(int(holder["pid"]), holder.get("start_ticks"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _describe(data: bytes) -> str:
    try:
        holder = json.loads(data)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("time", 0)))
        return f"pid {holder.get('pid')} on {holder.get('host')} (refreshed {started})"
    except (ValueError, AttributeError):
        return "an unreadable holder"


class Lease:
    """A held lease on `url`; `lost` says why it was lost (None while held)."""

    def __init__(self, url: str, model_dir: str, locked_error):
        self.url, self.lost = url, None
        self.version = self._take(model_dir, locked_error)
        self._stop, self._mutex = threading.Event(), threading.Lock()
        threading.Thread(target=self._refresh, daemon=True, name="t5pod-lease").start()

    def _take(self, model_dir: str, locked_error) -> cw.Version:
        for _ in range(5):
            try:
                return cw.create(self.url, _me())
            except cw.Conflict:
                pass
            current = cw.read(self.url)
            if current is None:
                continue  # released meanwhile
            data, version = current
            age = version.age_s()
            why = _dead_here(data) or (f"not refreshed for {age:.0f} s"
                                       if age > STALE_AFTER_S else None)
            if why is None:
                raise locked_error(
                    f"{model_dir} is being written by another run: {_describe(data)}, lock "
                    f"{self.url} (refreshed {age:.0f} s ago). Stop that run or use another "
                    f"model_dir; if it is dead, its lock is taken over once it is "
                    f"{STALE_AFTER_S:.0f} s old, or delete {self.url}.")
            try:
                taken = cw.replace(self.url, _me(), version)
            except cw.Conflict:
                continue  # another run took it over first: look again
            logger.warning(f"taking over the stale lock {self.url} of {_describe(data)}: {why}")
            return taken
        raise locked_error(f"could not take the lock {self.url} (it kept changing)")

    def _refresh(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(REFRESH_S):
            try:
                with self._mutex:
                    if self._stop.is_set():
                        return
                    self.version = cw.replace(self.url, _me(), self.version)
                last_ok = time.monotonic()
            except cw.Conflict:
                current = cw.read(self.url)
                holder = _describe(current[0]) if current else "nobody (it was deleted)"
                self.lost = (f"the lock {self.url} was taken over by {holder}; this run "
                             "writes nothing more into the model_dir")
                logger.error(self.lost)
                return
            except Exception as e:  # noqa: BLE001 - the bucket unreachable: retry, then give up
                if time.monotonic() - last_ok > STALE_AFTER_S / 2:
                    self.lost = (f"the lock {self.url} could not be refreshed for "
                                 f"{time.monotonic() - last_ok:.0f} s ({type(e).__name__}: "
                                 f"{e}); another run may take it over, so this run stops "
                                 "writing")
                    logger.error(self.lost)
                    return

    def release(self) -> None:
        with self._mutex:
            self._stop.set()
            if self.lost is None:
                cw.delete(self.url, self.version)
