"""Per-host input feeding with a saveable position.

Each process reads its own shard of a task or mixture, converted with seqio's encoder-decoder
feature converter (packing gives segment ids and positions), and batches its rows of the
global batch. The position is the number of batches consumed, a plain int, and a resumed run
sees exactly the batches it would have seen. Two sources:

- a task cache (`FeedConfig.cache_dir`, written offline by tools.cache_tasks): batch k is
  read by index (tasks/cached_feed.py), so resuming at step 500k costs what step 0 does;
- the live seqio pipeline (seqio ShardInfo from the process index and count): restoring
  rebuilds it and skips `position` batches, which costs as much as reading them.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import queue
import threading
from typing import Iterator

import numpy as np
import seqio

from fields import paths
from fields.integers import require_int
from tasks import settings_scope
from tasks.host_shards import host_shards
from tasks.hybrid_features import converter, is_hybrid
from tasks.settings import TaskSettings, from_mapping
from tasks.tf_setup import tf
from tasks.tfds_prepared import check_tfds_dataset_prepared, under_tfds_mock


RESUME_MODES = ("exact", "approximate")
# what "approximate" resumes across; any other change makes a saved position meaningless
# (and the source: the live pipeline or a cache, or another cache of the same task)
RESCALABLE = ("process_count", "batch_size", "cache")


@dataclasses.dataclass(frozen=True)
class FeedConfig:
    mixture_or_task_name: str
    task_feature_lengths: dict
    batch_size: int                 # global, across all hosts
    split: str = "train"
    shuffle: bool = True
    seed: int = 0
    pack: bool = True
    num_epochs: int | None = None   # None: repeat forever (training)
    tfds_data_dir: str | None = None
    # "exact": refuse a saved position that this run cannot replay. "approximate": a position
    # saved under another host count or batch size resumes at the same number of global
    # examples on this run's shards (some examples may repeat or be skipped).
    resume: str = "exact"
    # what the task code reads (benchmark dirs, corpus files, formats, mixing, sizes): a
    # TaskSettings, or a mapping {setting: {parameter: value}} read by tasks.settings
    task_settings: TaskSettings = TaskSettings()
    # a directory written by tools.cache_tasks for this task, split, lengths and packing:
    # read instead of the live pipeline (constant-time exact resume)
    cache_dir: str | None = None
    # threads preprocessing (live: tf.data's thread pool; cache: Grain's reader threads);
    # None: tf.data's default (every core) and 4 Grain threads
    read_threads: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "task_settings", from_mapping(self.task_settings))
        require_int("FeedConfig", "batch_size", self.batch_size, 1)
        require_int("FeedConfig", "seed", self.seed)
        if self.num_epochs is not None:
            require_int("FeedConfig", "num_epochs", self.num_epochs, meaning="or None: repeat")
        if self.read_threads is not None:
            require_int("FeedConfig", "read_threads", self.read_threads, 1,
                        meaning="preprocessing threads; None: the default")
        if self.cache_dir is not None:
            if not isinstance(self.cache_dir, str) or not self.cache_dir:
                raise ValueError(f"FeedConfig.cache_dir={self.cache_dir!r} must be a directory "
                                 "path or None")
            cache_dir = paths.user_path(self.cache_dir, "FeedConfig.cache_dir")
            if paths.scheme(cache_dir) == "s3":
                raise ValueError(f"FeedConfig.cache_dir={cache_dir}: Grain's ArrayRecord "
                                 "reader reads local paths and gs:// only; copy the cache to "
                                 "a local disk or gs:// (tools.cache_tasks writes s3:// too)")
            object.__setattr__(self, "cache_dir", cache_dir)
        if self.resume not in RESUME_MODES:
            raise ValueError(f"FeedConfig.resume={self.resume!r}; valid: {RESUME_MODES}")
        bad = {k: v for k, v in self.task_feature_lengths.items()
               if not isinstance(v, int) or v < 1}
        keys = set(self.task_feature_lengths)
        if bad or keys not in ({"inputs", "targets"}, {"inputs", "byte_inputs", "targets"}):
            raise ValueError(f"FeedConfig.task_feature_lengths={self.task_feature_lengths} must "
                             "give positive int lengths for exactly 'inputs' and 'targets' "
                             "(and 'byte_inputs' for a hybrid task)")


def lookup(name: str):
    """The seqio Task or Mixture called `name`, or an error listing close names."""
    tasks, mixtures = seqio.TaskRegistry.names(), seqio.MixtureRegistry.names()
    if name in tasks or name in mixtures:
        return seqio.get_mixture_or_task(name)
    close = difflib.get_close_matches(name, list(tasks) + list(mixtures), n=5, cutoff=0.5)
    raise ValueError(f"unknown task or mixture {name!r}; "
                     + (f"did you mean {close}?" if close else
                        f"registered: {sorted(tasks) + sorted(mixtures)}"))


def _tfds_sources(provider) -> list:
    tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
    return [t.source for t in tasks if isinstance(t.source, seqio.TfdsDataSource)]


def check_tfds_prepared(provider, data_dir: str | None) -> None:
    """Refuse, early and clearly, a TFDS dataset that was never downloaded and prepared."""
    for source in _tfds_sources(provider):
        check_tfds_dataset_prepared(source.tfds_dataset.name, data_dir)


def require_prepared(provider, data_dir: str | None = None) -> None:
    """check_tfds_prepared, except under tfds.testing.mock_data (which fakes every dataset)."""
    if not under_tfds_mock():
        check_tfds_prepared(provider, data_dir)


def dataset(config: FeedConfig, process_index: int = 0, process_count: int = 1):
    """The unbatched, converted tf.data for this host's shard."""
    provider = lookup(config.mixture_or_task_name)
    if config.tfds_data_dir:
        seqio.set_tfds_data_dir_override(config.tfds_data_dir)
    require_prepared(provider, config.tfds_data_dir)
    hybrid = is_hybrid(provider)
    if hybrid != ("byte_inputs" in config.task_feature_lengths):
        raise ValueError(f"task {config.mixture_or_task_name!r} "
                         + ("provides byte_inputs: add a 'byte_inputs' length to "
                            if hybrid else "has no byte_inputs: drop 'byte_inputs' from ")
                         + f"task_feature_lengths={dict(config.task_feature_lengths)}")
    with settings_scope.active(config.task_settings):
        return seqio.get_dataset(
            provider, task_feature_lengths=dict(config.task_feature_lengths),
            feature_converter=converter(provider, config.pack),
            dataset_split=config.split, shuffle=config.shuffle, num_epochs=config.num_epochs,
            shard_info=(seqio.ShardInfo(process_index, process_count) if process_count > 1
                        else None), seed=config.seed,
            verbose=False)


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
            from tasks import cached_feed

            self._iterator, self.cache, self.files = cached_feed.batches(
                config, lookup(config.mixture_or_task_name), self.process_index,
                self.process_count, self.local_batch, self.position,
                threads=config.read_threads or 4)
            return
        if self.position:
            logging.warning("resuming the live input pipeline of %s replays its first %d "
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
        now = {**dataclasses.asdict(config), "process_count": count,
               "cache": _cache_fingerprint(config)}
        saved = {"cache": None, **state}  # a position saved before caches: the live pipeline
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
            logging.warning("input position saved under %s resumes approximately at batch %d "
                            "of this run's shards", changed, position)
        return cls(config, process_index, count, position=position)


def _shown(key: str, value) -> str:
    if key != "cache":
        return f"{key}={value!r}"
    return ("the live pipeline (no cache)" if value is None
            else f"the cache with fingerprint {value}")


def _cache_fingerprint(config: FeedConfig) -> str | None:
    if not config.cache_dir:
        return None
    from tasks.cached_feed import cache_fingerprint

    return cache_fingerprint(config, lookup(config.mixture_or_task_name))


def prefetch_global(batches: Iterator[dict], sharding, size: int = 2) -> Iterator[dict]:
    """Turn host-local numpy batches into global jax.Arrays on a background thread."""
    import jax

    q: queue.Queue = queue.Queue(maxsize=size)
    done = object()

    def work():
        try:
            for batch in batches:
                q.put({k: jax.make_array_from_process_local_data(sharding, v)
                       for k, v in batch.items()})
        except BaseException as e:  # surfaced to the consumer
            q.put(e)
        q.put(done)

    threading.Thread(target=work, daemon=True).start()
    while True:
        item = q.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item
