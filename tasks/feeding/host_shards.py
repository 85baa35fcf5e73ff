"""Which input shards (files) a host reads from the live pipeline, as seqio decides it.

seqio gives host i of n the source's shards i, i + n, ... when the source has at least n
of them (its files, for a file source), and otherwise has every host read every shard and
keep every n-th example. The second case is said once per task and split.
"""

from __future__ import annotations

import logging

import seqio

logger = logging.getLogger(__name__)

_SAID: set = set()


def _tasks(provider) -> list:
    return list(provider.tasks) if isinstance(provider, seqio.Mixture) else [provider]


def host_shards(provider, split: str, index: int, count: int) -> list[str]:
    """The shards of every task of `provider` that host `index` of `count` reads (call it
    with the feed's task settings active: a corpus's files come from them)."""
    out = []
    for task in _tasks(provider):
        if (task.source.supports_arbitrary_sharding
                or isinstance(task.source, seqio.TfdsDataSource)):
            continue  # split by seqio and TFDS themselves (by file where they can)
        shards = list(task.source.list_shards(split))
        if len(shards) >= count:
            out += shards[index::count]
            continue
        out += shards
        if count > 1 and (task.name, split) not in _SAID:
            _SAID.add((task.name, split))
            logger.warning("%s (%s) has %d input shard(s) for %d hosts: every host reads "
                           "all of them and keeps every %d-th example; give it at least %d "
                           "files, or cache it (python -m tools.cache_tasks), to split it by "
                           "file", task.name, split, len(shards), count, count, count)
    return out
