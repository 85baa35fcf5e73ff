"""Checkpoint save and restore times of a preset's train state on a mesh: what
`tools.bench --checkpoint` reports (a library for that CLI; no command line of its own).

Two rows side by side, each measured in a fresh process as a run's first save meets it
(compiles and orbax's start-up included): t5pod's choice of replica writes (a replicated
array written whole by its first replica on CPU, orbax's choice elsewhere) and orbax's
replica-parallel writes (each replica writes a slice). Saves are synchronous and include
t5pod's checksums; `save_s` is the median of the saves after the first; the restore is
onto the same mesh. The t5pod row carries its time ratios to the replica-parallel one.
A bucket as `--checkpoint_dir` (gs://) adds the same two rows written there, each with its
ratios to the local row of its policy.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
import uuid

POLICIES = (("t5pod", None), ("replica_parallel", True))


def _measure(flags: dict, preset_name: str, replica_parallel, directory: str, queue) -> None:
    import jax

    import partitioning
    from experiments.perf.train_step import setup
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


@contextlib.contextmanager
def _scratch(root: str | None):
    """A fresh directory under `root` (local or a bucket), removed afterwards."""
    from fields import paths

    if root is None or not paths.is_bucket(root):
        with tempfile.TemporaryDirectory(dir=root) as directory:
            yield directory
        return
    directory = paths.join(paths.user_path(root, "--checkpoint_dir"),
                           f"t5pod_bench_{uuid.uuid4().hex[:8]}")
    try:
        yield directory
    finally:
        paths.rmtree(directory)


def bench_checkpoint(args, preset_name: str) -> list[dict]:
    """The t5pod row (with `*_vs_replica_parallel` ratios) and orbax's replica-parallel row;
    with a bucket as --checkpoint_dir, both on a local disk and both on the bucket, the
    bucket rows with `*_vs_local` ratios to the local row of their policy."""
    from fields import paths
    from experiments.perf.fresh_process import run_fresh

    if args.saves < 2:
        raise ValueError(f"--saves={args.saves} must be >= 2 (the first save, then the "
                         "median of the others)")
    stores = [("local", None if paths.is_bucket(args.checkpoint_dir or "")
               else args.checkpoint_dir)]
    if args.checkpoint_dir and paths.is_bucket(args.checkpoint_dir):
        stores.append((paths.scheme(args.checkpoint_dir), args.checkpoint_dir))
    rows = []
    for store, root in stores:
        for policy, replica_parallel in POLICIES:
            with _scratch(root) as directory:
                measured = run_fresh(_measure, vars(args), preset_name, replica_parallel,
                                     directory)
            rows.append({"mode": "checkpoint", "model": preset_name, "dtype": args.dtype,
                         "rules": args.rules, "store": store, "policy": policy, **measured})
    timed = ("first_save_s", "save_s", "restore_s")
    for ours, peer in zip(rows[::2], rows[1::2], strict=True):
        for key in timed:
            ours[f"{key}_vs_replica_parallel"] = round(ours[key] / peer[key], 3)
    for row in rows[2:]:
        local = rows[POLICIES.index(next(p for p in POLICIES if p[0] == row["policy"]))]
        for key in timed:
            row[f"{key}_vs_local"] = round(row[key] / local[key], 3)
    for row in rows:
        row.update({key: round(row[key], 3) for key in timed})
    return rows
