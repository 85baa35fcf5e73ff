"""Whether the process a lock names is still the one that took it (same host only)."""

from __future__ import annotations

import os


def start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_pid(pid: int, ticks: str | None) -> str | None:
    """Why `pid` (started at `ticks`) is no longer the lock's holder, or None if it is."""
    if not _alive(pid):
        return f"pid {pid} is gone"
    now = start_ticks(pid)
    if now is not None and ticks not in (None, now):
        return f"pid {pid} now belongs to another process"
    return None
