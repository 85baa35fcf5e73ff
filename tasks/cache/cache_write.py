"""Write one shard of a task cache: the unit of work a Beam worker runs (tasks/cache/cache_beam.py).

Shard i of n is seqio's shard i of n of the task's split (by file where the source has at
least n files, else by example), preprocessed, converted and packed at the cache's lengths,
unshuffled, one pass. Its random preprocessing is seeded with the cache seed and the shard
index, so shards do not repeat each other's noise. The shard is written under a temporary
name and renamed when whole (on a bucket: written locally, then uploaded in one piece); the
info file that makes the cache readable comes after all.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import uuid

from fields import paths
from fields.integers import require_int
from tasks.cache.cache_layout import encode, features_of, shard_name
from tasks.settings import TaskSettings

WRITER_OPTIONS = "group_size:1"  # one record per chunk: random access, as Grain reads it


@dataclasses.dataclass(frozen=True)
class CacheRequest:
    """What to cache, where, in how many shards (plain values: Beam pickles it to workers)."""

    task: str
    task_feature_lengths: dict
    cache_dir: str
    num_shards: int
    split: str = "train"
    pack: bool = True
    seed: int = 0
    task_settings: TaskSettings = TaskSettings()

    def __post_init__(self):
        require_int("CacheRequest", "num_shards", self.num_shards, 1)
        require_int("CacheRequest", "seed", self.seed, 0, 2**31 - 1)

    def feed_config(self, seed: int):
        from tasks.feed_config import FeedConfig

        return FeedConfig(self.task, dict(self.task_feature_lengths), batch_size=1,
                          split=self.split, shuffle=False, seed=seed, pack=self.pack,
                          num_epochs=1, task_settings=self.task_settings)


def shard_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index) % 2**31


def write_shard(request: CacheRequest, index: int) -> dict:
    """Write shard `index`; {'file', 'records', 'bytes', 'features', 'settings_read'}."""
    from array_record.python.array_record_module import ArrayRecordWriter

    import tasks  # noqa: F401  (registers the tasks on a fresh Beam worker)
    from tasks import settings_scope
    from tasks.live_pipeline import dataset

    config = request.feed_config(shard_seed(request.seed, index))
    with settings_scope.recording() as read:
        ds = dataset(config, index, request.num_shards)
    name = shard_name(index, request.num_shards)
    final = paths.join(request.cache_dir, name)
    local = final if not paths.is_bucket(final) else os.path.join(tempfile.gettempdir(), name)
    tmp = f"{local}.tmp-{uuid.uuid4().hex[:8]}"
    features, records = None, 0
    writer = ArrayRecordWriter(tmp, WRITER_OPTIONS)
    try:
        for example in ds.as_numpy_iterator():
            features = features or features_of(example)
            writer.write(encode(example, features))
            records += 1
    finally:
        writer.close()
    if not records:
        os.remove(tmp)
        raise ValueError(f"shard {index} of {request.num_shards} of {request.task!r} "
                         f"({request.split}) holds no example: use fewer shards")
    size = os.path.getsize(tmp)
    if paths.is_bucket(final):  # one upload: the object appears whole or not at all
        try:
            paths.upload(tmp, final)
        finally:
            os.remove(tmp)
    else:
        os.replace(tmp, final)
    return {"file": name, "records": records, "bytes": size,
            "features": features, "settings_read": sorted(read)}
