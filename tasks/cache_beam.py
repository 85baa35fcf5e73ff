"""Cache a task offline with Apache Beam: shards written in parallel, committed last.

    cache_task(CacheRequest(...), ["--runner=DirectRunner"])   # or Dataflow, Flink, Spark

Before the pipeline starts, and before anything is written, the request is checked against
what the directory holds: the same complete cache is left as it is; a cache of anything
else (task, split, lengths, packing, vocabularies, preprocessing, task settings, seed,
shard count) is refused naming the difference; leftovers of an unfinished job (shards
without an info file) are removed. The pipeline writes one shard per element
(tasks/cache_write.py), then one step gathers the shards' reports and writes
`cache_info.json`, which alone makes the cache readable.
"""

from __future__ import annotations

import logging
import os

from tasks.cache_layout import (INFO, IncompleteCache, read_info, shard_files, write_info)
from tasks.cache_spec import differences, task_spec
from tasks.cache_write import CacheRequest, shard_seed, write_shard


def planned(request: CacheRequest) -> dict:
    """What the finished cache will say it holds (builds the task once; reads no data)."""
    from tasks import settings_scope
    from tasks.feeding import dataset, lookup

    task = lookup(request.task)
    with settings_scope.recording() as read:
        dataset(request.feed_config(shard_seed(request.seed, 0)), 0, request.num_shards)
    return {"spec": task_spec(task, request.split, request.task_feature_lengths, request.pack,
                              request.task_settings, read),
            "seed": request.seed, "num_shards": request.num_shards}


def _existing(cache_dir: str) -> dict | None:
    path = os.path.join(cache_dir, INFO)
    if not os.path.exists(path):
        return None
    try:
        return read_info(cache_dir)
    except IncompleteCache as e:
        raise IncompleteCache(f"{e}. Remove {cache_dir} to cache there again.") from None


def check_target(request: CacheRequest, plan: dict) -> dict | None:
    """The existing info if `request` is cached there already; a ValueError if the directory
    holds another cache; None to go on (stale shards of an unfinished job removed)."""
    existing = _existing(request.cache_dir)
    if existing is not None:
        diff = differences({k: existing.get(k) for k in plan}, plan)
        if diff:
            raise ValueError(f"{request.cache_dir} already holds another cache ("
                             + "; ".join(diff) + "). Cache into another directory, or remove "
                             "this one. Nothing was written.")
        return existing
    stale = shard_files(request.cache_dir) + [
        n for n in (os.listdir(request.cache_dir) if os.path.isdir(request.cache_dir) else [])
        if ".array_record.tmp-" in n]
    for name in stale:
        os.remove(os.path.join(request.cache_dir, name))
    if stale:
        logging.warning("removed %d file(s) of an unfinished caching job in %s", len(stale),
                        request.cache_dir)
    return None


def commit(reports: list, request: CacheRequest, plan: dict) -> dict:
    """The pipeline's last step: every shard is written; check they agree, write the info."""
    reports = sorted(reports, key=lambda r: r["file"])
    if len(reports) != request.num_shards:
        raise RuntimeError(f"{len(reports)} of {request.num_shards} shards were written")
    features = reports[0]["features"]
    for r in reports:
        if r["features"] != features:
            raise ValueError(f"{r['file']} has features {r['features']}, {reports[0]['file']} "
                             f"has {features}")
    read = set().union(*(r["settings_read"] for r in reports))
    info = dict(plan, features=features,
                shards=[{k: r[k] for k in ("file", "records", "bytes")} for r in reports])
    if read != set(plan["spec"]["task_settings"]):
        from tasks.cache_spec import settings_values

        info["spec"] = dict(info["spec"], task_settings=settings_values(request.task_settings,
                                                                        read))
    write_info(request.cache_dir, info)
    return info


def cache_task(request: CacheRequest, pipeline_args: list[str]) -> dict:
    """Cache `request` with Beam (`pipeline_args`: Beam's own flags); returns the info."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    plan = planned(request)
    done = check_target(request, plan)
    if done is not None:
        logging.info("%s already holds this cache", request.cache_dir)
        return done
    os.makedirs(request.cache_dir, exist_ok=True)
    with beam.Pipeline(options=PipelineOptions(pipeline_args)) as p:
        _ = (p | "shards" >> beam.Create(range(request.num_shards))
             | "spread" >> beam.Reshuffle()
             | "write" >> beam.Map(lambda i, r: write_shard(r, i), request)
             | "gather" >> beam.combiners.ToList()
             | "commit" >> beam.Map(commit, request, plan))
    return read_info(request.cache_dir)
