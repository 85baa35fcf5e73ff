"""Cache a task or mixture offline with Apache Beam: shards written in parallel, committed last.

    cache_task(CacheRequest(...), ["--runner=DirectRunner"])   # or Dataflow, Flink, Spark

Before the pipeline starts, and before anything is written, the request is checked against
what the directory holds: the same complete cache is left as it is; a cache of anything
else (task, split, lengths, packing, vocabularies, preprocessing, task settings, seed,
shard count) is refused naming the difference; leftovers of an unfinished job (shards
without an info file) are removed. The pipeline writes one shard per element
(tasks/cache/cache_write.py), then one step gathers the shards' reports and writes
`cache_info.json`, which alone makes the cache readable. A mixture is cached as each of its
tasks with a positive rate, in one pipeline, then its rates (`mixture_info.json`).
"""

from __future__ import annotations

import dataclasses
import logging

from fields import paths
from tasks.cache.cache_layout import (INFO, MIXTURE_INFO, IncompleteCache, read_info,
                                read_mixture_info, shard_files, write_info)
from tasks.cache.cache_spec import differences, task_spec
from tasks.cache.cache_write import CacheRequest, shard_seed, write_shard


def planned(request: CacheRequest) -> dict:
    """What the finished cache will say it holds (builds the task once; reads no data)."""
    from tasks import settings_scope
    from tasks.live_pipeline import dataset
    from tasks.task_lookup import lookup

    task = lookup(request.task)
    with settings_scope.recording() as read:
        dataset(request.feed_config(shard_seed(request.seed, 0)), 0, request.num_shards)
    return {"spec": task_spec(task, request.split, request.task_feature_lengths, request.pack,
                              request.task_settings, read),
            "seed": request.seed, "num_shards": request.num_shards}


def _existing(cache_dir: str) -> dict | None:
    if not paths.exists(paths.join(cache_dir, INFO)):
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
        n for n in paths.listdir(request.cache_dir) if ".array_record.tmp-" in n]
    for name in stale:
        paths.remove(paths.join(request.cache_dir, name))
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
        from tasks.cache.cache_spec import settings_values

        info["spec"] = dict(info["spec"], task_settings=settings_values(request.task_settings,
                                                                        read))
    write_info(request.cache_dir, info)
    return info


def parts(request: CacheRequest) -> tuple[list[CacheRequest], dict | None]:
    """(one request per task to cache, the mixture's info or None for a task)."""
    import seqio

    from tasks import settings_scope
    from tasks.task_lookup import lookup

    provider = lookup(request.task)
    if not isinstance(provider, seqio.Mixture):
        return [request], None
    with settings_scope.active(request.task_settings):
        rates = {t.name: float(provider.get_rate(t)) for t in provider.tasks}
    rates = {name: rate for name, rate in rates.items() if rate > 0}
    subs = [dataclasses.replace(request, task=name,
                                cache_dir=paths.join(request.cache_dir, name))
            for name in rates]
    return subs, {"mixture": request.task, "rates": rates}


def _check_mixture(request: CacheRequest, mixture: dict) -> bool:
    """True if this mixture is cached there already; ValueError if another one is."""
    if not paths.exists(paths.join(request.cache_dir, MIXTURE_INFO)):
        return False
    diff = differences(read_mixture_info(request.cache_dir), mixture)
    if diff:
        raise ValueError(f"{request.cache_dir} already holds another mixture cache ("
                         + "; ".join(diff) + "). Cache into another directory, or remove this "
                         "one. Nothing was written.")
    return True


def cache_task(request: CacheRequest, pipeline_args: list[str]) -> dict:
    """Cache `request` with Beam (`pipeline_args`: Beam's own flags); returns the info (a
    mixture's: its rates and each task's info under 'tasks')."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    subs, mixture = parts(request)
    mixture_done = mixture is not None and _check_mixture(request, mixture)
    plans = [planned(r) for r in subs]
    todo = [(r, plan) for r, plan in zip(subs, plans, strict=True)
            if check_target(r, plan) is None]
    for r, _ in todo:
        paths.makedirs(r.cache_dir)
    if todo:
        shards = [(k, i) for k, (r, _) in enumerate(todo) for i in range(r.num_shards)]
        with beam.Pipeline(options=PipelineOptions(pipeline_args)) as p:
            _ = (p | "shards" >> beam.Create(shards)
                 | "spread" >> beam.Reshuffle()
                 | "write" >> beam.Map(lambda ki, t: (ki[0], write_shard(t[ki[0]][0], ki[1])),
                                       todo)
                 | "by task" >> beam.GroupByKey()
                 | "commit" >> beam.Map(lambda kv, t: commit(list(kv[1]), *t[kv[0]]), todo))
    else:
        logging.info("%s already holds this cache", request.cache_dir)
    if mixture is None:
        return read_info(request.cache_dir)
    if not mixture_done:
        write_info(request.cache_dir, mixture, MIXTURE_INFO)
    return {**mixture, "tasks": {r.task: read_info(r.cache_dir) for r in subs}}
