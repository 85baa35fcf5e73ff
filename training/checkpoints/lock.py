"""One writer per model_dir: a lock file naming the host, pid and start time of its run.

On a bucket the lock is a lease taken by conditional writes instead (bucket_lock.py); a run
whose lease was taken over stops saving (`ensure_held`). What follows is the local lock.

Taken (by process 0 of a run; all hosts share the model_dir) before the run writes
anything, released on exit, exceptions included. A second run is refused with the
holder's name. A lock left by a dead process is taken over with a message: on the same
host when its pid is gone (or now belongs to a younger process); from another host when
it has not been refreshed for `STALE_AFTER_S` (a live holder refreshes it every
`REFRESH_S` from a background thread). A run takes it once (runner.train, before its first
check; tools.convert around its write): a second take in the same process is refused too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time

from fields import paths
from training.checkpoints import bucket_lock
from training.checkpoints.process_alive import dead_pid, start_ticks
from training.run_dir import RunDir

logger = logging.getLogger(__name__)

REFRESH_S, STALE_AFTER_S = 60.0, 600.0

_held: dict[str, threading.Event] = {}  # abspath -> its refresher's stop event
_leases: dict[str, bucket_lock.Lease] = {}  # lock URL -> the lease this process holds
_guard = threading.Lock()


class RunLocked(RuntimeError):
    """Another live run writes this model_dir."""


def _stale(holder: dict, path: str) -> str | None:
    """Why the lock's holder is dead, or None if it may be alive."""
    if not holder:
        age = time.time() - os.path.getmtime(path)
        return f"unreadable for {age:.0f} s" if age > 10 else None
    if holder.get("host") == socket.gethostname():
        return dead_pid(int(holder.get("pid", -1)), holder.get("start_ticks"))
    age = time.time() - os.path.getmtime(path)
    if age > STALE_AFTER_S:
        return f"not refreshed for {age:.0f} s"
    return None


def _describe(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("time", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')} (started {started})"


def _create(path: str) -> bool:
    me = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
          "start_ticks": start_ticks(os.getpid()), "argv": sys.argv}
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(me, f)
    return True


def acquire(model_dir) -> None:
    path = RunDir.of(model_dir).lock
    with _guard:
        if path in _held or path in _leases:
            raise RunLocked(f"{model_dir}: this process already holds its lock {path}; a run "
                            "takes it once")
        if paths.is_bucket(path):
            _leases[path] = bucket_lock.Lease(path, str(model_dir), RunLocked)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with _dir_locked(os.path.dirname(path)):
            _take(path, model_dir)
        stop = threading.Event()
        threading.Thread(target=_refresh, args=(path, stop), daemon=True,
                         name="t5pod-lock").start()
        _held[path] = stop


@contextlib.contextmanager
def _dir_locked(directory: str):
    """flock on the directory while a lock is checked and taken (two restarts at once)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # a filesystem without flock: the O_EXCL create still decides
        yield
    finally:
        os.close(fd)


def _take(path: str, model_dir: str) -> None:
    for _ in range(3):
        if _create(path):
            return
        try:
            with open(path) as f:
                holder = json.load(f)
        except FileNotFoundError:
            continue  # released meanwhile
        except ValueError:
            holder = {}  # torn by a kill while it was written, or being written now
        why = _stale(holder, path)
        if why is None:
            raise RunLocked(f"{model_dir} is being written by another run: "
                            f"{_describe(holder)}, lock {path}. Stop that run or use "
                            f"another model_dir; if it is dead, delete {path}.")
        logger.warning(f"taking over the stale lock {path} of {_describe(holder)}: {why}")
        os.remove(path)
    raise RunLocked(f"could not take the lock {path}")


def _refresh(path: str, stop: threading.Event) -> None:
    while not stop.wait(REFRESH_S):
        try:
            os.utime(path)
        except OSError:
            return


def ensure_held() -> None:
    """Raise LockLost if a lease this process holds on a bucket was taken over."""
    for lease in list(_leases.values()):
        if lease.lost:
            raise bucket_lock.LockLost(lease.lost)


def release(model_dir) -> None:
    path = RunDir.of(model_dir).lock
    with _guard:
        lease = _leases.pop(path, None)
        if lease is not None:
            lease.release()
            return
        stop = _held.pop(path, None)
        if stop is None:
            return
        stop.set()
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


class hold:
    """`with hold(model_dir, primary):` the lock for the body (only process 0 takes it)."""

    def __init__(self, model_dir: str, primary: bool = True):
        self.model_dir, self.primary = model_dir, primary

    def __enter__(self):
        if self.primary:
            acquire(self.model_dir)
        return self

    def __exit__(self, *exc):
        if self.primary:
            release(self.model_dir)
        return False
