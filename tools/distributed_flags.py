"""The multi-host flags every CLI that touches devices takes (tools.train, tools.eval,
tools.infer), and joining the job from them (partitioning/distributed.py)."""

from __future__ import annotations

import argparse


def add_distributed_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("multi-host (see partitioning/distributed.py)")
    g.add_argument("--distributed", default="auto",
                   choices=["auto", "explicit", "cluster", "single"],
                   help="auto: explicit if --coordinator_address, cluster on Cloud TPU/SLURM, "
                        "else single process")
    g.add_argument("--coordinator_address", help="HOST:PORT of process 0")
    g.add_argument("--num_processes", type=int)
    g.add_argument("--process_id", type=int)
    g.add_argument("--local_device_ids", help="comma-separated local device ids (default all)")
    g.add_argument("--initialization_timeout", type=int, default=300, help="seconds")
    g.add_argument("--heartbeat_timeout", type=int, default=100,
                   help="seconds before a silent process counts as dead and the rest stop")


def start_distributed(p: argparse.ArgumentParser, args) -> str:
    """Join the multi-host job (or not) before anything touches a device."""
    from partitioning.distributed import DistributedConfig, initialize

    try:
        ids = args.local_device_ids
        config = DistributedConfig(
            mode=args.distributed, coordinator_address=args.coordinator_address,
            num_processes=args.num_processes, process_id=args.process_id,
            local_device_ids=None if ids is None else tuple(int(i) for i in ids.split(",")),
            initialization_timeout=args.initialization_timeout,
            heartbeat_timeout=args.heartbeat_timeout)
    except ValueError as e:
        p.error(str(e))
    return initialize(config)
