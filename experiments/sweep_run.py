"""A sweep's members, checked all together first, then each trained through runner.train.

Every member becomes a Run (gin files + its bindings, parsed once at the edge by
runner.gin_flags.run_from_gin into a plain value, task settings included) and its training
and held-out data give a first example before anything trains; no gin state is kept while
members train. Members train one after another in
OUT/MEMBER (resumable); a member with OUT/MEMBER/sweep_result.json is finished and skipped.
A member whose run names a held-out mixture is evaluated zero-shot on it afterwards
(greedy decoding, exact match).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import sys
import time

from fields import paths
from runner import gin_flags
from experiments import sweep_report
from experiments.sweep_config import Member, SweepConfig, read

logger = logging.getLogger(__name__)

RESULT = "sweep_result.json"


def _named(member: Member, e: Exception) -> Exception:
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    return (ValueError if isinstance(e, KeyError) else type(e))(
        f"sweep member {member.name!r}: {message}")


def member_run(cfg: SweepConfig, member: Member, extra: list[str]) -> tuple:
    """One member's (run, records), parsed from gin; errors name the member."""
    try:
        return gin_flags.run_from_gin(list(cfg.gin_files),
                                      member.gin_bindings(cfg.bindings) + extra)
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
        raise _named(member, e) from e


def check(cfg: SweepConfig, members: list[Member], extra: list[str], out: str) -> dict:
    """Everything that can be checked without training, for every member: its Run, its mesh
    and trainer (shardings, batch vs data-parallel degree), what its model_dir's checkpoints
    allow (runner/resume_check.py) and a first example of its data. Returns {member name:
    (run, records)}, the values the members train from."""
    import partitioning
    from model_zoo.identity import identity_of
    from partitioning.cpu_devices import request_cpu_devices
    from runner.resume_check import checkpointed_step
    from tasks import settings_scope
    from tasks.task_lookup import lookup
    from training.trainer import Trainer

    keys = set(cfg.bindings) | {k for m in members for k, _ in m.bindings}
    gin_flags.check_macros_defined(list(cfg.gin_files), sorted(k for k in keys if "." not in k))
    parsed = {}
    for member in members:
        run, records = parsed[member.name] = member_run(cfg, member, extra)
        try:
            request_cpu_devices(run.mesh)
            Trainer(run.model, run.trainer, partitioning.make_mesh(run.mesh))
            checkpointed_step(run, paths.join(out, member.name), identity_of(run.model))
            data = [(run.feed.mixture_or_task_name, "train")]
            if run.heldout_mixture and cfg.heldout_examples:
                data.append((run.heldout_mixture, "validation"))
            for name, split in data:
                with settings_scope.active(run.feed.task_settings):
                    ds = lookup(name).get_dataset(run.lengths, split=split, shuffle=False)
                next(ds.take(1).as_numpy_iterator())
        except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
            raise _named(member, e) from e
    return parsed


def heldout_eval(model_dir: str, heldout: str, examples: int, lengths: dict,
                 task_settings=None) -> dict:
    from model_zoo.decoding import DecodeConfig
    from inference.predictor import Predictor
    from inference.task_evaluator import ExactMatchEvaluator
    from tasks import settings_scope

    predictor = Predictor(model_dir, decode_config=DecodeConfig(lengths["targets"]),
                          max_input_length=lengths["inputs"])
    with settings_scope.active(task_settings):
        evaluator = ExactMatchEvaluator(predictor, heldout, "validation", lengths, examples)
        results = evaluator.by_task(evaluator.run(0, predictor.params))
    # fractions, like the teacher-forced eval/accuracy beside them
    out = {f"heldout/{task}": r["accuracy"] / 100.0 for task, r in results.items()}
    out["heldout/accuracy"] = sum(out.values()) / len(out)
    return out


def run_member(cfg: SweepConfig, member: Member, run, records: dict, out: str) -> dict | None:
    """Train one member and write its result; None if SIGTERM stopped it first."""
    from runner.train import train

    model_dir = paths.join(out, member.name)
    start = time.time()
    if train(run, model_dir, progress=False, records=records).preempted:
        return None  # unfinished: no result, so the next invocation resumes it
    seconds = time.time() - start
    metrics = sweep_report.final_metrics(model_dir)
    if run.heldout_mixture and cfg.heldout_examples:
        metrics.update(heldout_eval(model_dir, run.heldout_mixture, cfg.heldout_examples,
                                    run.lengths, run.feed.task_settings))
    metrics["train_seconds"] = round(seconds, 1)
    result = {"member": member.name, "bindings": dict(member.bindings), "metrics": metrics}
    paths.write_text(paths.join(model_dir, RESULT), json.dumps(result, indent=2))
    return result


@contextlib.contextmanager
def compilation_cache(path: str | None):
    """JAX's persistent compilation cache in `path` while members run, unless the user set
    one: members that compile the same programs (e.g. sweeping mixture weights, steps or the
    initial checkpoint) and re-runs of a sweep then skip XLA compilation."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    if jax.config.jax_compilation_cache_dir or path is None:  # None: OUT is a bucket
        yield
        return
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    before = {n: getattr(jax.config, n) for n in names}
    for name, value in zip(names, (path, 0.0, 0), strict=True):
        jax.config.update(name, value)
    cc.reset_cache()
    try:
        yield
    finally:
        for name, value in before.items():
            jax.config.update(name, value)
        cc.reset_cache()


def finished(out: str, member: Member) -> dict | None:
    path = paths.join(out, member.name, RESULT)
    if not paths.isfile(path):
        return None
    return json.loads(paths.read_text(path))


def emit(sweep_path: str, out: str, members: list[Member], relaunch_flags: list[str]) -> list:
    """One launch script per member (and collect.sh) under OUT/launch; each runs where this
    did (relative paths in the flags mean the same), with this Python (so this t5pod)."""
    here = os.getcwd()
    launch = os.path.join(out, "launch")
    os.makedirs(launch, exist_ok=True)
    base = [sys.executable, "-m", "tools.sweep", f"--sweep={os.path.abspath(sweep_path)}",
            f"--out={os.path.abspath(out)}"] + relaunch_flags
    scripts = []
    for name, tail in [(m.name, [f"--only={m.name}"]) for m in members] + [
            ("collect", ["--collect"])]:
        path = os.path.join(launch, f"{name}.sh")
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\n# t5pod sweep member {name}\nset -e\ncd {shlex.quote(here)}\n"
                    f"exec {shlex.join(base + tail)}\n")
        os.chmod(path, 0o755)
        scripts.append(path)
    return scripts


def sweep(sweep_path: str, out: str, bindings: list[str] = (), only: str | list | None = None,
          emit_only: bool = False, collect: bool = False,
          relaunch_flags: list[str] = ()) -> list[dict]:
    """Check, then train the pending members (or write launch scripts), then the report.

    `bindings` are gin bindings for every member; `relaunch_flags` the same as command-line
    flags, for the launch scripts.
    """
    import tasks  # noqa: F401  (registers the tasks)

    cfg = read(sweep_path)
    members = cfg.expand()
    chosen = members
    if only:  # a member's name, or a list of them
        names = [only] if isinstance(only, str) else list(only)
        unknown = [n for n in names if n not in {m.name for m in members}]
        if unknown:
            raise ValueError(f"--only={unknown[0]!r} is not a member; members: "
                             f"{[m.name for m in members]}")
        chosen = [m for m in members if m.name in names]
    out = paths.user_path(out, "--out")
    if emit_only and paths.is_bucket(out):
        raise ValueError(f"--emit writes launch scripts, which run from a local disk; give a "
                         f"local --out, not {out} (members may still train into a bucket "
                         "without --emit)")
    paths.makedirs(out)
    if not collect:
        pending = [m for m in chosen if finished(out, m) is None]
        parsed = check(cfg, pending, list(bindings), out)   # each member parsed once
        if emit_only:
            for path in emit(sweep_path, out, members, list(relaunch_flags)):
                logger.info(f"sweep: launch script {path}")
            return []
        local_cache = None if paths.is_bucket(out) else os.path.join(out, ".jax_cache")
        with compilation_cache(local_cache):
            for member in pending:
                logger.info(f"sweep: training member {member.name}")
                start = time.process_time()
                run, records = parsed[member.name]
                result = run_member(cfg, member, run, records, out)
                if result is None:
                    logger.info(f"sweep: SIGTERM: stopped in member {member.name}; run the sweep "
                                "again to resume it")
                    break
                logger.info(f"sweep: member {member.name}: {json.dumps(result)}")
                logger.info(f"sweep: member {member.name} took {time.process_time() - start:.1f} "
                            "CPU seconds")
        for member in chosen:
            if member not in pending:
                logger.info(f"sweep: member {member.name} is finished; skipped")
    results = [r for r in (finished(out, m) for m in members) if r is not None]
    missing = [m.name for m in members if finished(out, m) is None]
    if missing:
        logger.warning(f"sweep: not finished yet: {missing}")
    if results:
        sweep_report.write_all(out, cfg.swept_keys(), results)
        logger.info(f"sweep: {out}/results.md, results.csv, results.png")
    return results
