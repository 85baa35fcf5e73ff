"""Train a gin-configured run.

    python -m tools.train --gin_file=runs/demo_pretrain.gin --model_dir=/tmp/run \
        [--gin_file=mesh/cpu8.gin] [--gin.TRAIN_STEPS=500] [--gin.MIXTURE_OR_TASK_NAME=...]

Resumes from the latest complete checkpoint in --model_dir; SIGTERM saves and exits 0.
Outputs: DIR/checkpoints, DIR/metrics.jsonl, DIR/tensorboard, DIR/config.gin, DIR/model.json.
On a CPU-only machine the mesh's devices are made as fake CPU devices (runner.train).

Multi-host: run the same command on every host. Cloud TPU VMs and SLURM steps are detected;
elsewhere add --coordinator_address=HOST0:PORT --num_processes=N --process_id=I. Host 0
alone writes metrics and config files; all hosts write the (shared) checkpoint directory.
"""

from __future__ import annotations

import argparse
import json

from tools import cli  # before any library: the quiet start and the log lines
from tools.distributed_flags import start_distributed
from tools.path_flags import path_flag


def main(argv=None) -> dict:
    from runner.startup_sigterm import startup_sigterm

    with startup_sigterm():  # SIGTERM from here on: a save, or exit 0 with nothing trained
        return _main(argv)


def _main(argv) -> dict:
    p = cli.parser(__doc__, distributed=True)
    p.add_argument("--model_dir", required=True, type=path_flag)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="default: a bar on a terminal, a line per log step otherwise")
    args, files, bindings = cli.parse(p, argv)
    if not files:
        p.error("give at least one --gin_file")
    from runner import gin_flags  # after the flags: --help and flag errors come at once
    from runner.train import train

    start_distributed(p, args)
    run, records = gin_flags.run_from_gin(files, bindings)
    summary = train(run, args.model_dir, progress=args.progress, records=records).as_json()
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
