"""This host's batches from a task cache, addressable by batch index (Grain over ArrayRecord).

The cache's shard files are split across hosts by file (host i reads files i, i + n, ...);
with fewer files than hosts every host opens every file and takes every n-th record
(said once). Each epoch shuffles the host's records across all its files (Grain's index
shuffle, reseeded per epoch), then rows are batched. Batch k of a host is a pure function
of (cache, seed, k, host count), so resuming at any position costs the same as starting:
no batch before it is read. A mixture's cache mixes its tasks' rows at the cached rates
(Grain's index-addressable mix), then batches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

from fields import paths
from tasks import settings_scope
from tasks.cache.cache_layout import (IncompleteCache, decoder, fingerprint, read_info,
                                read_mixture_info)
from tasks.cache.cache_spec import differences, task_spec

logger = logging.getLogger(__name__)

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
        logger.warning("%s has %d shard file(s) for %d hosts: every host reads every file "
                       "and takes every %d-th record (cache with --num_shards >= the host "
                       "count to split by file)", where, len(shards), process_count,
                       process_count)
    return shards, True


def rows(config, info: dict, process_index: int, process_count: int, seed: int):
    """(this host's rows of one task cache as a grain.MapDataset, shuffled per epoch and
    repeated, the files they come from)."""
    import grain

    shards, by_record = host_files(info, process_index, process_count, config.cache_dir)
    files = [paths.join(config.cache_dir, s["file"]) for s in shards]
    source = grain.sources.ArrayRecordDataSource(files)  # local files or gs:// objects
    expected = sum(s["records"] for s in shards)
    if len(source) != expected:
        raise IncompleteCache(f"the cache files {files} hold {len(source)} records, "
                              f"{expected} when cached: cache again")
    ds = grain.MapDataset.source(source)
    if by_record:
        ds = ds[process_index::process_count]
    if config.shuffle:
        ds = ds.shuffle(seed=seed)
    return ds.repeat(config.num_epochs).map(decoder(info["features"])), files


def _mixture_parts(config, mixture):
    """(each task's feed config, its cache info, its rate), tasks sorted by name, refused
    unless the cache holds this mixture at its current rates."""
    stored = read_mixture_info(config.cache_dir)
    with settings_scope.active(config.task_settings):
        rates = {t.name: float(mixture.get_rate(t)) for t in mixture.tasks}
    wanted = {"mixture": mixture.name, "rates": {n: r for n, r in rates.items() if r > 0}}
    diff = differences(stored, wanted)
    if diff:
        raise ValueError(f"the cache {config.cache_dir} holds another mixture: "
                         + "; ".join(diff) + ". Cache this mixture into another directory.")
    tasks = {t.name: t for t in mixture.tasks}
    parts = []
    for name in sorted(wanted["rates"]):
        sub = dataclasses.replace(config, mixture_or_task_name=name,
                                  cache_dir=paths.join(config.cache_dir, name))
        parts.append((sub, open_cache(sub, tasks[name]), wanted["rates"][name]))
    return parts


def _mixture_fingerprint(parts) -> str:
    text = json.dumps([[fingerprint(info) for _, info, _ in parts], [r for *_, r in parts]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _mixture_rows(config, mixture, process_index: int, process_count: int):
    import grain

    parts = _mixture_parts(config, mixture)
    datasets, paths = [], []
    for k, (sub, info, _) in enumerate(parts):
        ds, files = rows(sub, info, process_index, process_count, (config.seed + k) % 2**32)
        datasets.append(ds)
        paths += files
    mixed = grain.MapDataset.mix(datasets, [rate for *_, rate in parts])
    return mixed, paths, _mixture_fingerprint(parts)


def batches(config, provider, process_index: int, process_count: int, local_batch: int,
            position: int, threads: int = 4):
    """(iterator of this host's batches from `position`, the cache's fingerprint, the files
    this host reads). `provider`: the feed's seqio Task or Mixture."""
    import grain
    import seqio

    if isinstance(provider, seqio.Mixture):
        ds, paths, print_ = _mixture_rows(config, provider, process_index, process_count)
    else:
        info = open_cache(config, provider)
        ds, paths = rows(config, info, process_index, process_count, config.seed)
        print_ = fingerprint(info)
    ds = ds.batch(local_batch, drop_remainder=config.num_epochs is None)
    if position > len(ds):
        raise ValueError(f"position {position} is past the end of the cache ({len(ds)} "
                         f"batches of {local_batch} for this host)")
    options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)
    return iter(ds[position:].to_iter_dataset(options)), print_, paths


def cache_fingerprint(config, provider) -> str:
    """What `batches` reports as the fingerprint, from the cache's info files alone (no
    shard file is opened)."""
    import seqio

    if isinstance(provider, seqio.Mixture):
        return _mixture_fingerprint(_mixture_parts(config, provider))
    return fingerprint(open_cache(config, provider))
