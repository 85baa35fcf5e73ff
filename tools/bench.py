"""Time the partitioned train step on synthetic batches; one JSON line per config.

    python -m tools.bench --preset t5_1_1_base --batch 64 --inputs 512 --targets 128 \
        --dtype bfloat16 [--mesh data=-1] [--rules data_parallel] [--remat none]

MoE presets (switch_*, st_moe_*) route with their train capacity factor; FLOPs count the
k selected experts and the router. `--moe_dispatch einsum --moe_dispatch index` times the
dispatches in one run, their steps alternating (median step, `step_time_vs_first_dispatch`);
`--moe_experts N` changes E. Switch-base-8 against its FLOP-matched dense model:
    python -m tools.bench --preset switch_base_8 --preset t5_1_0_base --dtype bfloat16 \
        --batch 64 --inputs 512 --targets 128 [--mesh expert=8 --rules expert]

No TensorFlow: batches are random ids with the real shapes. MFU is against the chip's
dense peak for --dtype (training/throughput.py; null where unknown, e.g. CPU). tokens/s
counts inputs + targets. On GPUs set XLA's flags first, as the launchers do:
eval "$(python -m tools.xla_flags gpu)"; each row records them (`xla_profile`, `xla_flags`).
`--data TASK` instead times that task's input pipeline (examples/s, tokens/s; this mode
imports TensorFlow). `--loop TASK` times the whole train loop fed by that task (prefetch,
logging, preemption agreement) against the bare step in the same run, as `loop_vs_step`
(experiments/perf/loop_overhead.py; imports TensorFlow). `--resume TASK --positions 0,1000,10000
[--cache_dir DIR]` times the first batch of that task's feed resumed at each position, each
in a fresh process (experiments/perf/resume_latency.py). `--feed TASK [--cache_dir DIR]` times one
host's feed of that task on 1, 2 and all cores against the --preset step in the same run
(`feed_vs_step`, experiments/perf/feed_overhead.py). `--checkpoint` times saving and restoring the
--preset's train state on --mesh, t5pod's replica writes against orbax's replica-parallel
ones, each in a fresh process (experiments/perf/checkpoint_times.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import statistics
import sys
import time

from tools import cli  # first: the quiet start and the log lines

import jax
import numpy as np

import partitioning
from model_zoo import preset
from model_zoo.flops import train_flops_per_step
from training.throughput import peak_tflops
from partitioning import xla_profiles
from experiments.perf.train_step import add_step_flags, setup, synthetic_batch
from tools.path_flags import path_flag


@dataclasses.dataclass
class _Run:
    """One preset's compiled train step, with its state, batch and last metrics."""

    cfg: object
    trainer: object
    step: object
    state: object
    batch: dict
    compile_s: float
    metrics: dict | None = None

    def advance(self, steps: int) -> None:
        for _ in range(steps):
            self.state, self.metrics = self.step(self.state, self.batch)


def _compiled(args, preset_name: str, moe_dispatch: str | None) -> _Run:
    cfg, trainer, batch = setup(args, preset_name, moe_dispatch)
    state = trainer.init_state()
    batch = trainer.shard_batch(batch)
    t0 = time.perf_counter()
    step = trainer.compile_train_step({k: (v.shape, v.dtype) for k, v in batch.items()})
    return _Run(cfg, trainer, step, state, batch, time.perf_counter() - t0)


def bench(args, preset_name: str, moe_dispatch: str | None = None) -> dict:
    run = _compiled(args, preset_name, moe_dispatch)
    run.advance(args.warmup)
    jax.block_until_ready(run.state)
    t0 = time.perf_counter()
    run.advance(args.steps)
    jax.block_until_ready(run.metrics)
    return _row(args, preset_name, run, (time.perf_counter() - t0) / args.steps)


def bench_dispatches(args, preset_name: str, dispatches: list[str]) -> list[dict]:
    """A row per MoE dispatch, their steps alternating (one each per round) so that a busy
    machine slows them alike: step_time_s is each one's median step, and
    `step_time_vs_first_dispatch` its ratio to the first dispatch's."""
    runs = [_compiled(args, preset_name, d) for d in dispatches]
    for run in runs:
        run.advance(max(args.warmup, 1))
        jax.block_until_ready(run.state)
    times = [[] for _ in runs]
    for _ in range(args.steps):
        for run, spent in zip(runs, times, strict=True):
            t0 = time.perf_counter()
            run.advance(1)
            jax.block_until_ready(run.metrics)
            spent.append(time.perf_counter() - t0)
    rows = [_row(args, preset_name, run, statistics.median(spent))
            for run, spent in zip(runs, times, strict=True)]
    for row in rows:
        row["step_time_vs_first_dispatch"] = round(row["step_time_s"] / rows[0]["step_time_s"], 3)
    return rows


def _row(args, preset_name: str, run: _Run, step_s: float) -> dict:
    cfg, mesh, memory = run.cfg, run.trainer.mesh, run.step.memory_analysis()
    n_dev = mesh.devices.size
    flops = train_flops_per_step(cfg, args.batch, args.inputs, args.targets)
    tflops_dev = flops / step_s / n_dev / 1e12
    peak = peak_tflops(mesh.devices.flat[0].device_kind, args.dtype)
    mem = None
    stats = getattr(mesh.devices.flat[0], "memory_stats", lambda: None)()
    if stats:
        mem = stats.get("peak_bytes_in_use")
    return {"impl": "t5pod", "model": preset_name, "dtype": args.dtype, "batch": args.batch,
            "inputs": args.inputs, "targets": args.targets,
            "mesh": partitioning.mesh_shape(mesh),
            "rules": args.rules, "remat": args.remat, "attention": args.attention,
            "vocab_chunk": args.vocab_chunk,
            "moe": None if cfg.moe is None else {"dispatch": cfg.moe.dispatch,
                                                 "num_experts": cfg.moe.num_experts},
            "devices": n_dev, "device_kind": mesh.devices.flat[0].device_kind,
            "step_time_s": round(step_s, 5),
            "tokens_per_s": round(args.batch * (args.inputs + args.targets) / step_s, 1),
            "tflops_per_device": round(tflops_dev, 3),
            "mfu": None if peak is None else round(tflops_dev / peak, 4),
            "compile_s": round(run.compile_s, 2), "peak_bytes_in_use": mem,
            "xla_temp_bytes": getattr(memory, "temp_size_in_bytes", None),
            "xla_argument_bytes": getattr(memory, "argument_size_in_bytes", None),
            "final_loss": float(run.metrics["loss"]), "jax": jax.__version__,
            "xla_profile": xla_profiles.profile_of(os.environ.get("XLA_FLAGS", "")),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "date": datetime.date.today().isoformat(),
            "command": "python -m tools.bench " + " ".join(sys.argv[1:])}


def bench_data(args) -> dict:
    """Examples/s and tokens/s of a task's input pipeline on this host (imports TensorFlow)."""
    from tasks.feed_config import FeedConfig
    from tasks.feeding.host_feed import HostFeed

    lengths = {"inputs": args.inputs, "targets": args.targets}
    feed = HostFeed(FeedConfig(args.data, lengths, args.batch, seed=0), 0, 1)
    batch = next(feed)  # pipeline start-up
    t0 = time.perf_counter()
    examples = tokens = 0
    for _ in range(args.steps):
        batch = next(feed)
        seg = batch.get("encoder_segment_ids", batch["encoder_input_tokens"] > 0)
        examples += int(sum(np.max(row) for row in seg))
        tokens += int((batch["encoder_input_tokens"] > 0).sum()
                      + (batch["decoder_target_tokens"] > 0).sum())
    seconds = time.perf_counter() - t0
    return {"data": args.data, "batch": args.batch, "inputs": args.inputs,
            "targets": args.targets, "batches": args.steps,
            "examples_per_s": round(examples / seconds, 1),
            "tokens_per_s": round(tokens / seconds, 1),
            "batches_per_s": round(args.steps / seconds, 2)}


def versus_hf(args, preset_name: str, ours: dict) -> dict:
    """The HF peer on the same shapes and device, with the tokens/s ratio (ours / peer)."""
    from experiments.perf import hf_peer

    why = hf_peer.available()
    if why:
        print(why, file=sys.stderr)
        return {"impl": "hf", "model": preset_name, "skipped": why}
    cfg = preset(preset_name)
    batch = synthetic_batch(args.batch, args.inputs, args.targets, cfg.vocab_size)
    peer = hf_peer.bench_hf(cfg, batch, args.dtype, args.steps, args.warmup, args.hf_compile)
    return {**peer, "model": preset_name, "dtype": args.dtype, "batch": args.batch,
            "inputs": args.inputs, "targets": args.targets,
            "ratio_tokens_per_s": round(ours["tokens_per_s"] / peer["tokens_per_s"], 3),
            "date": ours["date"], "command": ours["command"]}


def main(argv=None):
    p = cli.parser(__doc__)
    add_step_flags(p)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--data", help="time this task's input pipeline instead of the model")
    p.add_argument("--loop", metavar="TASK",
                   help="time the train loop fed by this task against the bare step")
    p.add_argument("--prefetch", type=int, default=2, help="--loop: batches placed ahead")
    p.add_argument("--resume", metavar="TASK",
                   help="time to first batch when this task's feed resumes at --positions")
    p.add_argument("--positions", type=lambda s: [int(x) for x in s.split(",")],
                   default=[0, 1000, 10000], help="--resume: batch positions, e.g. 0,1000")
    p.add_argument("--feed", metavar="TASK", help="this task's feed per host for 1, 2 and all "
                   "cores against the step of --preset")
    p.add_argument("--feed_batches", type=int, default=20, help="--feed: batches timed")
    p.add_argument("--cache_dir", help="--resume/--feed: read this task cache")
    p.add_argument("--checkpoint", action="store_true",
                   help="time checkpoint saves and a restore of the --preset's train state")
    p.add_argument("--saves", type=int, default=3, help="--checkpoint: saves timed (>= 2)")
    p.add_argument("--checkpoint_dir", type=path_flag,
                   help="--checkpoint: write under this directory "
                   "(default: the system's temporary directory); a gs:// one adds its rows "
                   "beside the local ones")
    p.add_argument("--vs", choices=["hf"], help="also time HF transformers on the same shapes")
    p.add_argument("--hf_compile", action=argparse.BooleanOptionalAction, default=True,
                   help="torch.compile the HF peer (default on)")
    p.add_argument("--out", help="also append the JSON lines to this file")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        p.error(f"--steps={args.steps} must be >= 1 and --warmup={args.warmup} >= 0")
    if args.checkpoint_dir:  # s3:// holds no checkpoints (orbax)
        from training.checkpoints.manager import refuse_s3

        try:
            refuse_s3(args.checkpoint_dir, "--checkpoint_dir")
        except ValueError as e:
            p.error(str(e))
    def emit(row):
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")

    if args.data:
        emit(bench_data(args))
        return
    if args.resume:
        from experiments.perf.resume_latency import bench_resume

        for row in bench_resume(args):
            emit(row)
        return
    for name in args.preset or ["t5_1_1_tiny"]:
        if args.checkpoint:
            from experiments.perf.checkpoint_times import bench_checkpoint

            for row in bench_checkpoint(args, name):
                emit(row)
            continue
        if args.feed:
            from experiments.perf.feed_overhead import bench_feed

            for row in bench_feed(args, name):
                emit(row)
            continue
        if args.loop:
            from experiments.perf.loop_overhead import bench_loop

            emit(bench_loop(args, name))
            continue
        if len(args.moe_dispatch or ()) > 1:
            rows = bench_dispatches(args, name, args.moe_dispatch)
        else:
            rows = [bench(args, name, (args.moe_dispatch or [None])[0])]
        for ours in rows:
            emit(ours)
        if args.vs == "hf":
            emit(versus_hf(args, name, ours))


if __name__ == "__main__":
    main()
