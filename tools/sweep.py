"""Run a hyper-parameter sweep: one training per member, then one results table and plot.

    python -m tools.sweep --sweep=gin/sweeps/flan_cpu_tiny.gin --out=/tmp/sweep \
        [--gin.NAME=VALUE ...]         # extra bindings for every member
        [--emit]                       # write OUT/launch/MEMBER.sh (cluster) instead of running
        [--only=MEMBER]                # run one member (what each launch script does)
        [--collect]                    # only gather finished members into the report

Every member is checked first (gin names, macros, config values, its mesh and trainer,
what its OUT/MEMBER checkpoints allow, a first example of its training data and held-out
tasks), so a bad binding, JSONL file or template fails before any training starts. SIGTERM
saves the member in training and stops the sweep (it resumes there when run again).
Members then run one after another in this process, each in OUT/MEMBER (runner.train: it
resumes from its checkpoints); a member with OUT/MEMBER/sweep_result.json is finished and
skipped. After training, a member whose run defines HELDOUT_MIXTURE is
evaluated zero-shot on it: greedy decoding of `heldout_examples` validation examples per
task, exact match of the answer. Results: OUT/results.csv, OUT/results.md, OUT/results.png.
See gin/sweeps/ and experiments/sweep_config.py for the sweep file format;
experiments/sweep_run.py does the work.
"""

from __future__ import annotations

import sys

from tools import cli  # first: the quiet start and the log lines
from tools.path_flags import path_flag


def main(argv=None) -> list[dict]:
    from runner.startup_sigterm import startup_sigterm
    from experiments.sweep_run import sweep

    argv = sys.argv[1:] if argv is None else list(argv)
    p = cli.parser(__doc__)
    p.add_argument("--sweep", required=True, help="sweep gin file (gin/sweeps/NAME.gin)")
    p.add_argument("--out", required=True, type=path_flag)
    p.add_argument("--emit", action="store_true", help="write launch scripts, run nothing")
    p.add_argument("--only", help="run this member only")
    p.add_argument("--collect", action="store_true", help="only write the report")
    args, files, bindings = cli.parse(p, argv)
    if files:
        p.error("give gin files in the sweep file (sweep.SweepConfig.gin_files)")
    with startup_sigterm():  # SIGTERM stops the member in training (saved) and the sweep
        results = sweep(args.sweep, args.out, bindings, only=args.only, emit_only=args.emit,
                        collect=args.collect,
                        relaunch_flags=[a for a in argv if a.startswith("--gin.")])
    if results:
        from fields import paths

        cli.show_report(paths.join(args.out, "results.md"))
    return results


if __name__ == "__main__":
    main()
