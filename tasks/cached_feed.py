"""This host's batches from a task cache, addressable by batch index (Grain over ArrayRecord).

The cache's shard files are split across hosts by file (host i reads files i, i + n, ...);
with fewer files than hosts every host opens every file and takes every n-th record
(said once). Each epoch shuffles the host's records across all its files (Grain's index
shuffle, reseeded per epoch), then rows are batched. Batch k of a host is a pure function
of (cache, seed, k, host count), so resuming at any position costs the same as starting:
no batch before it is read.
"""

from __future__ import annotations

import logging
import os

from tasks.cache_layout import IncompleteCache, decoder, fingerprint, read_info
from tasks.cache_spec import differences, task_spec

_SAID: set = set()


def open_cache(config, task) -> dict:
    """The info of `config.cache_dir`, refused (naming the difference) unless it is a
    complete cache of exactly this feed's `task`, split, lengths, packing and settings."""
    info = read_info(config.cache_dir)
    stored = info["spec"]
    wanted = task_spec(task, config.split,
                       config.task_feature_lengths, config.pack, config.task_settings,
                       set(stored.get("task_settings", {})))
    diff = differences(stored, wanted)
    if diff:
        raise ValueError(f"the cache {config.cache_dir} holds other data than this feed "
                         "reads: " + "; ".join(diff) + ". Cache this feed's task into "
                         "another directory (python -m tools.cache_tasks) or train with the "
                         "cache's settings.")
    return info


def host_files(info: dict, process_index: int, process_count: int, where: str):
    """(this host's shard records, record-level?) for host `process_index` of `count`."""
    shards = info["shards"]
    if len(shards) >= process_count:
        return shards[process_index::process_count], False
    if where not in _SAID:
        _SAID.add(where)
        logging.warning("%s has %d shard file(s) for %d hosts: every host reads every file "
                        "and takes every %d-th record (cache with --num_shards >= the host "
                        "count to split by file)", where, len(shards), process_count,
                        process_count)
    return shards, True


def host_dataset(config, info: dict, process_index: int, process_count: int,
                 local_batch: int):
    """(the grain.MapDataset of this host's batches (index k: its k-th batch), its files)."""
    import grain

    shards, by_record = host_files(info, process_index, process_count, config.cache_dir)
    paths = [os.path.join(config.cache_dir, s["file"]) for s in shards]
    source = grain.sources.ArrayRecordDataSource(paths)
    expected = sum(s["records"] for s in shards)
    if len(source) != expected:
        raise IncompleteCache(f"the cache files {paths} hold {len(source)} records, "
                              f"{expected} when cached: cache again")
    ds = grain.MapDataset.source(source)
    if by_record:
        ds = ds[process_index::process_count]
    if config.shuffle:
        ds = ds.shuffle(seed=config.seed)
    ds = ds.repeat(config.num_epochs).map(decoder(info["features"]))
    return ds.batch(local_batch, drop_remainder=config.num_epochs is None), paths


def batches(config, task, process_index: int, process_count: int, local_batch: int,
            position: int, threads: int = 4):
    """(iterator of this host's batches from `position`, the cache's fingerprint, the files
    this host reads)."""
    import grain

    info = open_cache(config, task)
    ds, paths = host_dataset(config, info, process_index, process_count, local_batch)
    if position > len(ds):
        raise ValueError(f"position {position} is past the end of the cache ({len(ds)} "
                         f"batches of {local_batch} for this host)")
    options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)
    return iter(ds[position:].to_iter_dataset(options)), fingerprint(info), paths
