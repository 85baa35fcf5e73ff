"""Per-host input feeding with a saveable position.

Each process reads its own shard of a task or mixture, converted with seqio's encoder-decoder
feature converter (packing gives segment ids and positions), and batches its rows of the
global batch. The position is the number of batches consumed, a plain int, and a resumed run
sees exactly the batches it would have seen. Two sources:

- a task cache (`FeedConfig.cache_dir`, written offline by tools.cache_tasks): batch k is
  read by index (tasks/cache/cached_feed.py), so resuming at step 500k costs what step 0 does;
- the live seqio pipeline (seqio ShardInfo from the process index and count): restoring
  rebuilds it and skips `position` batches, which costs as much as reading them.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Iterator

import numpy as np

from fields import old_formats
from tasks import settings_scope
from tasks.feed_config import RESCALABLE, FeedConfig
from tasks.feeding.host_shards import host_shards
from tasks.live_pipeline import dataset
from tasks.task_lookup import lookup
from tasks.tf_setup import tf

logger = logging.getLogger(__name__)


class HostFeed:
    """Iterator of this host's rows of each global batch, as dicts of numpy arrays."""

    def __init__(self, config: FeedConfig, process_index: int | None = None,
                 process_count: int | None = None, position: int = 0):
        import jax

        self.config = config
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        if config.batch_size % self.process_count:
            raise ValueError(f"batch_size={config.batch_size} is not divisible by the "
                             f"{self.process_count} hosts feeding it")
        self.local_batch = config.batch_size // self.process_count
        self.position = int(position)
        self.cache = None  # the cache's fingerprint when reading one
        self.files: list[str] = []  # the input files (or shards) this host reads
        if config.cache_dir:
            from tasks.cache import cached_feed

            self._iterator, self.cache, self.files = cached_feed.batches(
                config, lookup(config.mixture_or_task_name), self.process_index,
                self.process_count, self.local_batch, self.position,
                threads=config.read_threads or 4)
            return
        if self.position:
            logger.warning("resuming the live input pipeline of %s replays its first %d "
                           "batches; cache the task (python -m tools.cache_tasks) to resume "
                           "in constant time", config.mixture_or_task_name, self.position)
        ds = dataset(config, self.process_index, self.process_count)
        with settings_scope.active(config.task_settings):
            self.files = host_shards(lookup(config.mixture_or_task_name), config.split,
                                     self.process_index, self.process_count)
        ds = ds.batch(self.local_batch, drop_remainder=config.num_epochs is None)
        if config.read_threads:
            options = tf.data.Options()
            options.threading.private_threadpool_size = config.read_threads
            ds = ds.with_options(options)
        self._iterator = ds.skip(self.position).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        batch = next(self._iterator)
        self.position += 1
        return {k: np.asarray(v) for k, v in batch.items()}

    def state(self) -> dict:
        """JSON-serialisable position, saved with checkpoints."""
        return {"position": self.position, "mixture_or_task_name":
                self.config.mixture_or_task_name, "seed": self.config.seed,
                "batch_size": self.config.batch_size, "process_count": self.process_count,
                "task_feature_lengths": dict(self.config.task_feature_lengths),
                "pack": self.config.pack, "split": self.config.split,
                "process_index": self.process_index, "cache": self.cache}

    @classmethod
    def restore(cls, config: FeedConfig, state: dict, process_index: int | None = None,
                process_count: int | None = None) -> "HostFeed":
        import jax

        count = jax.process_count() if process_count is None else process_count
        return cls(config, process_index, count,
                   position=check_position(config, state, count))


def check_position(config: FeedConfig, state: dict, process_count: int) -> int:
    """The batch a saved feed state resumes at under `config` on `process_count` hosts, or a
    ValueError naming what changed when the position cannot replay the same examples. Reads
    only JSON (and a cache's fingerprint): no dataset is opened."""
    now = {**dataclasses.asdict(config), "process_count": process_count,
           "cache": _cache_fingerprint(config)}
    saved = old_formats.feed_state(state)
    changed = {key: (saved[key], now[key]) for key in (
        "mixture_or_task_name", "seed", "batch_size", "process_count",
        "task_feature_lengths", "pack", "split", "cache")
        if key in saved and saved[key] != now[key]}
    position = state["position"]
    rescalable = set(changed) <= set(RESCALABLE)
    if changed and not (rescalable and config.resume == "approximate"):
        key, (before, have) = next(iter(changed.items()))
        raise ValueError(
            f"the saved input position was for {_shown(key, before)}, but this run has "
            f"{_shown(key, have)}: resuming would not replay the same examples. Restore "
            "the original value" + (", set tasks.FeedConfig.resume='approximate' to go on "
                                    "from the same example count on the new shards"
                                    if rescalable else "") + " or start a new model_dir.")
    if changed:
        position = position * state.get("batch_size", config.batch_size) // config.batch_size
        logger.warning("input position saved under %s resumes approximately at batch %d "
                       "of this run's shards", changed, position)
    return position


def _shown(key: str, value) -> str:
    if key != "cache":
        return f"{key}={value!r}"
    return ("the live pipeline (no cache)" if value is None
            else f"the cache with fingerprint {value}")


def _cache_fingerprint(config: FeedConfig) -> str | None:
    if not config.cache_dir:
        return None
    from tasks.cache.cached_feed import cache_fingerprint

    return cache_fingerprint(config, lookup(config.mixture_or_task_name))
