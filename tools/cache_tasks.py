"""Cache a run's task or mixture offline with Apache Beam, for constant-time exact resume.

    python -m tools.cache_tasks --gin_file=runs/demo_pretrain.gin --cache_dir=/data/cache/demo \
        [--num_shards=16] [--seed=0] [BEAM FLAGS, default --runner=DirectRunner]
    python -m tools.cache_tasks --task=demo_span_corruption --inputs=512 --targets=114 \
        --cache_dir=/data/cache/demo_512

With --gin_file the run's own train feed (task, lengths, split, packing, task settings) is
cached, so the cache matches it; then train with --gin.CACHE_DIR=/data/cache/demo. Every
flag this tool does not know goes to Beam (e.g. --runner=DataflowRunner --project=...;
--runner=FlinkRunner; --runner=SparkRunner). Use --num_shards >= the run's host count so
hosts split the cache by file. Prints the cache's info as JSON.
"""

from __future__ import annotations

import argparse
import json

from tools import cli  # first: the quiet start and the log lines
from tools.path_flags import path_flag


def _request(p, args, files, bindings):
    from tasks.cache.cache_write import CacheRequest

    if files:
        from runner import gin_flags

        feed = gin_flags.run_from_gin(files, bindings)[0].feed
        return CacheRequest(feed.mixture_or_task_name, dict(feed.task_feature_lengths),
                            args.cache_dir, args.num_shards, split=feed.split, pack=feed.pack,
                            seed=args.seed, task_settings=feed.task_settings)
    if not (args.task and args.inputs and args.targets):
        p.error("give --gin_file (the run's feed), or --task, --inputs and --targets")
    lengths = {"inputs": args.inputs, "targets": args.targets}
    if args.byte_inputs:
        lengths["byte_inputs"] = args.byte_inputs
    return CacheRequest(args.task, lengths, args.cache_dir, args.num_shards, split=args.split,
                        pack=args.pack, seed=args.seed)


def main(argv=None) -> dict:
    p = cli.parser(__doc__)
    p.add_argument("--cache_dir", required=True, type=path_flag)
    p.add_argument("--num_shards", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="seeds the random preprocessing")
    p.add_argument("--task", help="a task or mixture (without --gin_file)")
    p.add_argument("--inputs", type=int)
    p.add_argument("--targets", type=int)
    p.add_argument("--byte_inputs", type=int, help="a hybrid task's byte inputs length")
    p.add_argument("--split", default="train")
    p.add_argument("--pack", action=argparse.BooleanOptionalAction, default=True)
    args, files, bindings, beam_args = cli.parse(p, argv, known=True)
    request = _request(p, args, files, bindings)
    if not any(a.startswith("--runner") for a in beam_args):
        beam_args = ["--runner=DirectRunner", *beam_args]

    import tasks  # noqa: F401  (registers the tasks)
    from tasks.cache.cache_beam import cache_task

    info = cache_task(request, beam_args)
    caches = info["tasks"] if "mixture" in info else {request.task: info}
    shards = [s for c in caches.values() for s in c["shards"]]
    summary = {"cache_dir": request.cache_dir, "cached": request.task,
               "tasks": sorted(caches), "shards": len(shards),
               "records": sum(s["records"] for s in shards),
               "bytes": sum(s["bytes"] for s in shards)}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
