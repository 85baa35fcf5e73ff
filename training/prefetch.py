"""Global batches placed on the mesh ahead of the step that uses them.

`DevicePrefetch(feed, place, depth)` keeps up to `depth` batches already turned into
global jax.Arrays (`place`, e.g. `Trainer.shard_batch`), each with the feed position that
follows it. The loop takes batch k, dispatches step k (asynchronously), then tops the queue
up, so batch k + depth is read and copied to the devices while step k runs.

It runs on the calling thread: which batch is read during which step is fixed, the same on
every host and in every run, and the feed is never touched from two threads. The position
saved with a checkpoint is the one stored with the batch the step consumed, never the feed's
own position, which is up to `depth` batches ahead.
"""

from __future__ import annotations

import collections
import copy
from typing import Callable


class DevicePrefetch:
    def __init__(self, feed, place: Callable[[dict], dict], depth: int):
        if depth < 0:
            raise ValueError(f"prefetch depth={depth} must be >= 0 (0: off)")
        self.feed, self.place, self.depth = feed, place, depth
        self._queue: collections.deque = collections.deque()

    def _read(self) -> None:
        batch = next(self.feed)
        self._queue.append((self.place(batch), copy.deepcopy(self.feed.state())))

    def fill(self, wanted: int | None = None) -> None:
        """Place batches until `depth` wait (at most `wanted`: never read past the run's end)."""
        target = self.depth if wanted is None else min(self.depth, wanted)
        while len(self._queue) < target:
            self._read()

    def __iter__(self):
        return self

    def __next__(self) -> tuple[dict, dict]:
        """(global batch, the feed position right after it)."""
        if not self._queue:
            self._read()
        return self._queue.popleft()

    def __len__(self) -> int:
        return len(self._queue)
