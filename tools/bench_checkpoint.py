"""Checkpoint save and restore times of a preset's train state on a mesh: what
`tools.bench --checkpoint` reports (a library for that CLI; no command line of its own).

Two rows side by side, each measured in a fresh process as a run's first save meets it
(compiles and orbax's start-up included): t5pod's choice of replica writes (a replicated
array written whole by its first replica on CPU, orbax's choice elsewhere) and orbax's
replica-parallel writes (each replica writes a slice). Saves are synchronous and include
t5pod's checksums; `save_s` is the median of the saves after the first; the restore is
onto the same mesh. The t5pod row carries its time ratios to the replica-parallel one.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

POLICIES = (("t5pod", None), ("replica_parallel", True))


def _measure(flags: dict, preset_name: str, replica_parallel, directory: str, queue) -> None:
    import jax

    import partitioning
    from tools.bench_step import setup
    from training.checkpoints.manager import Checkpointer

    _, trainer, _ = setup(argparse.Namespace(**flags), preset_name)
    state = jax.block_until_ready(trainer.init_state())
    ckpt = Checkpointer(directory, keep=flags["saves"], async_save=False,
                        replica_parallel=replica_parallel)
    saves = []
    for step in range(1, flags["saves"] + 1):
        t0 = time.perf_counter()
        ckpt.save(step, state)
        saves.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    jax.block_until_ready(ckpt.restore(trainer.abstract_state())[0])
    mesh = trainer.mesh
    queue.put({"devices": mesh.devices.size, "device_kind": mesh.devices.flat[0].device_kind,
               "mesh": partitioning.mesh_shape(mesh),
               "state_bytes": int(sum(x.nbytes for x in jax.tree.leaves(state))),
               "first_save_s": saves[0], "save_s": statistics.median(saves[1:]),
               "restore_s": time.perf_counter() - t0})


def bench_checkpoint(args, preset_name: str) -> list[dict]:
    """The t5pod row (with `*_vs_replica_parallel` ratios) and orbax's replica-parallel row."""
    from tools.fresh_process import run_fresh

    if args.saves < 2:
        raise ValueError(f"--saves={args.saves} must be >= 2 (the first save, then the "
                         "median of the others)")
    rows = []
    for policy, replica_parallel in POLICIES:
        with tempfile.TemporaryDirectory(dir=args.checkpoint_dir) as directory:
            measured = run_fresh(_measure, vars(args), preset_name, replica_parallel,
                                 directory)
        rows.append({"mode": "checkpoint", "model": preset_name, "dtype": args.dtype,
                     "rules": args.rules, "policy": policy, **measured})
    ours, peer = rows
    timed = ("first_save_s", "save_s", "restore_s")
    for key in timed:
        ours[f"{key}_vs_replica_parallel"] = round(ours[key] / peer[key], 3)
    for row in rows:
        row.update({key: round(row[key], 3) for key in timed})
    return rows
