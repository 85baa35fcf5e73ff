"""The task settings a dataset is being built with.

seqio calls a task's dataset_fn as `fn(split, shuffle_files, seed)`, so the settings a feed
carries (`FeedConfig.task_settings`) reach the task code this way: whoever builds a dataset
(tasks.live_pipeline.dataset, an evaluator) makes its settings active for the build, and a
dataset_fn reads its part with `get(name, default)` while it builds, never later.
"""

from __future__ import annotations

import contextlib
import contextvars

_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("task_settings", default=None)
_READ: contextvars.ContextVar = contextvars.ContextVar("task_settings_read", default=None)


@contextlib.contextmanager
def active(settings):
    """`with active(settings):` datasets built in the block read `settings` (a TaskSettings)."""
    token = _ACTIVE.set(settings)
    try:
        yield settings
    finally:
        _ACTIVE.reset(token)


@contextlib.contextmanager
def recording():
    """`with recording() as names:` the setting names task code reads in the block (a set)."""
    names: set = set()
    token = _READ.set(names)
    try:
        yield names
    finally:
        _READ.reset(token)


def get(name: str, default):
    """The active settings' `name` part, or `default()` when none are active."""
    settings = _ACTIVE.get()
    read = _READ.get()
    if read is not None:
        read.add(name)
    return default() if settings is None else getattr(settings, name)
