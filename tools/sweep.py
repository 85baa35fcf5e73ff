"""Run a hyper-parameter sweep: one training per member, then one results table and plot.

    python -m tools.sweep --sweep=gin/sweeps/flan_cpu_tiny.gin --out=/tmp/sweep \
        [--gin.NAME=VALUE ...]         # extra bindings for every member
        [--emit]                       # write OUT/launch/MEMBER.sh (cluster) instead of running
        [--only=MEMBER]                # run one member (what each launch script does)
        [--collect]                    # only gather finished members into the report

Every member is checked first (gin names, macros, config values, a first example of its
training data and held-out tasks), so a bad binding, JSONL file or template fails before any
training starts. Members then run one after another in this process, each in OUT/MEMBER
(tools.train: it resumes from its checkpoints); a member with OUT/MEMBER/sweep_result.json is
finished and skipped. After training, a member whose run defines HELDOUT_MIXTURE is
evaluated zero-shot on it: greedy decoding of `heldout_examples` validation examples per
task, exact match of the answer. Results: OUT/results.csv, OUT/results.md, OUT/results.png.
See gin/sweeps/ and runner/sweep_config.py for the sweep file format.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import time

import gin

from runner import gin_flags, sweep_report
from runner.sweep_config import Member, SweepConfig, read

RESULT = "sweep_result.json"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parse_member(cfg: SweepConfig, member: Member, extra: list[str]) -> None:
    try:
        gin_flags.parse(list(cfg.gin_files), member.gin_bindings(cfg.bindings) + extra)
    except ValueError as e:
        raise ValueError(f"sweep member {member.name!r}: {e}") from None


def _check_macros(cfg: SweepConfig, members: list[Member]) -> None:
    """Macro keys (no '.') must be macros the base run defines: gin accepts any name."""
    import difflib
    import re

    keys = set(cfg.bindings) | {k for m in members for k, _ in m.bindings}
    gin_flags.parse(list(cfg.gin_files), [])
    for name in sorted(k for k in keys if "." not in k):
        try:
            gin.query_parameter(f"%{name}")
        except ValueError:
            defined = sorted(set(re.findall(r"%([A-Za-z_]\w*)", gin.config_str())))
            close = difflib.get_close_matches(name, defined, n=3, cutoff=0.5)
            raise ValueError(f"sweep binds {name!r}, which is neither a configurable parameter "
                             f"(configurable.parameter) nor a macro of {list(cfg.gin_files)}"
                             + (f"; did you mean {close}?" if close else
                                f"; its macros: {defined}")) from None


def _heldout_name() -> str | None:
    try:
        return gin.query_parameter("%HELDOUT_MIXTURE") or None
    except ValueError:
        return None


def check(cfg: SweepConfig, members: list[Member], extra: list[str]) -> None:
    """Everything that can be checked without training, for every member."""
    from tasks.feeding import lookup
    from runner import configurables
    from tools.train import REQUIRED_MACROS

    configurables.register_tasks_configurables()
    _check_macros(cfg, members)
    for member in members:
        _parse_member(cfg, member, extra)
        try:
            gin_flags.require_macros(REQUIRED_MACROS)
            run = configurables.train()
            lengths = dict(run.feed.task_feature_lengths)
            data = [(run.feed.mixture_or_task_name, "train")]
            if _heldout_name() and cfg.heldout_examples:
                data.append((_heldout_name(), "validation"))
            for name, split in data:
                ds = lookup(name).get_dataset(lengths, split=split, shuffle=False)
                next(ds.take(1).as_numpy_iterator())
        except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
            message = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise (ValueError if isinstance(e, KeyError) else type(e))(
                f"sweep member {member.name!r}: {message}") from e
        finally:
            gin.clear_config()


def heldout_eval(model_dir: str, heldout: str, examples: int, lengths: dict) -> dict:
    from model_zoo.decoding import DecodeConfig
    from tools.eval import evaluate_task
    from tools.infer import Predictor

    predictor = Predictor(model_dir, decode_config=DecodeConfig(lengths["targets"]),
                          max_input_length=lengths["inputs"])
    results = evaluate_task(predictor, heldout, "validation", lengths, examples)
    # fractions, like the teacher-forced eval/accuracy beside them
    out = {f"heldout/{task}": r["accuracy"] / 100.0 for task, r in results.items()}
    out["heldout/accuracy"] = sum(out.values()) / len(out)
    return out


def run_member(cfg: SweepConfig, member: Member, out: str, extra_flags: list[str]) -> dict:
    from tools import train

    model_dir = os.path.join(out, member.name)
    flags = ([f"--model_dir={model_dir}", "--no-progress"]
             + [f"--gin_file={f}" for f in cfg.gin_files]
             + [f"--gin.{b.replace(' = ', '=', 1)}" for b in member.gin_bindings(cfg.bindings)]
             + extra_flags)
    start = time.time()
    train.main(flags)
    seconds = time.time() - start
    heldout = _heldout_name()
    lengths = dict(gin.query_parameter("%TASK_FEATURE_LENGTHS"))
    gin.clear_config()
    metrics = sweep_report.final_metrics(model_dir)
    if heldout and cfg.heldout_examples:
        metrics.update(heldout_eval(model_dir, heldout, cfg.heldout_examples, lengths))
    metrics["train_seconds"] = round(seconds, 1)
    result = {"member": member.name, "bindings": dict(member.bindings), "metrics": metrics}
    with open(os.path.join(model_dir, RESULT), "w") as f:
        json.dump(result, f, indent=2)
    return result


@contextlib.contextmanager
def compilation_cache(path: str):
    """JAX's persistent compilation cache in `path` while members run, unless the user set
    one: members that compile the same programs (e.g. sweeping mixture weights, steps or the
    initial checkpoint) and re-runs of a sweep then skip XLA compilation."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    if jax.config.jax_compilation_cache_dir:
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
    path = os.path.join(out, member.name, RESULT)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def emit(args, members: list[Member], extra_flags: list[str]) -> list[str]:
    """One launch script per member (and collect.sh) under OUT/launch."""
    launch = os.path.join(args.out, "launch")
    os.makedirs(launch, exist_ok=True)
    base = [sys.executable, "-m", "tools.sweep", f"--sweep={os.path.abspath(args.sweep)}",
            f"--out={os.path.abspath(args.out)}"] + extra_flags
    paths = []
    for name, tail in [(m.name, [f"--only={m.name}"]) for m in members] + [
            ("collect", ["--collect"])]:
        path = os.path.join(launch, f"{name}.sh")
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\n# t5pod sweep member {name}\nset -e\ncd {shlex.quote(REPO)}\n"
                    f"exec {shlex.join(base + tail)}\n")
        os.chmod(path, 0o755)
        paths.append(path)
    return paths


def main(argv=None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else list(argv)
    _, bindings, rest = gin_flags.split_gin_args(argv)
    extra_flags = [a for a in argv if a.startswith("--gin.")]
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sweep", required=True, help="sweep gin file (gin/sweeps/NAME.gin)")
    p.add_argument("--out", required=True)
    p.add_argument("--emit", action="store_true", help="write launch scripts, run nothing")
    p.add_argument("--only", help="run this member only")
    p.add_argument("--collect", action="store_true", help="only write the report")
    args = p.parse_args(rest)
    if any(a.startswith("--gin_file") for a in argv):
        p.error("give gin files in the sweep file (sweep.SweepConfig.gin_files)")

    import tasks  # noqa: F401  (registers tasks and their gin configurables)

    cfg = read(args.sweep)
    members = cfg.expand()
    if args.only:
        chosen = [m for m in members if m.name == args.only]
        if not chosen:
            p.error(f"--only={args.only!r} is not a member; members: {[m.name for m in members]}")
        members_to_run = chosen
    else:
        members_to_run = members
    os.makedirs(args.out, exist_ok=True)
    if not args.collect:
        pending = [m for m in members_to_run if finished(args.out, m) is None]
        check(cfg, pending, bindings)
        if args.emit:
            for path in emit(args, members, extra_flags):
                print(path)
            return []
        with compilation_cache(os.path.join(args.out, ".jax_cache")):
            for member in pending:
                print(f"sweep: training member {member.name}", file=sys.stderr)
                start = time.process_time()
                print(json.dumps(run_member(cfg, member, args.out, extra_flags)))
                print(f"sweep: member {member.name} took {time.process_time() - start:.1f} "
                      "CPU seconds", file=sys.stderr)
        for member in members_to_run:
            if member not in pending:
                print(f"sweep: member {member.name} is finished; skipped", file=sys.stderr)
    results = [r for r in (finished(args.out, m) for m in members) if r is not None]
    missing = [m.name for m in members if finished(args.out, m) is None]
    if missing:
        print(f"sweep: not finished yet: {missing}", file=sys.stderr)
    if results:
        md = sweep_report.write_all(args.out, cfg.swept_keys(), results)
        print(f"\n{md}\n\n{args.out}/results.csv, results.md, results.png")
    return results


if __name__ == "__main__":
    main()
