"""Run a research study: a sweep of trainings, then one table, CSV and plot of its findings.

    python -m tools.study --study=switch_vs_dense --out=/tmp/svd \\
        [--gin.NAME=VALUE ...]     # bindings for every member (full scale: steps, model, mesh)
        [--only=MEMBER ...]        # these members alone (the smallest setting: two of them)
        [--emit]                   # write OUT/launch/MEMBER.sh (cluster) instead of running
        [--collect]                # only write the report from finished members

Studies (experiments/studies/): switch_vs_dense, scaling, precision, treednn; each is a sweep file
gin/studies/NAME.gin trained by experiments.sweep_run (checked first, resumable: run it again
after a stop) and an analysis of every member's metrics.jsonl. Results: OUT/study.md,
OUT/study.csv, OUT/study.png (and the sweep's OUT/results.*). See docs/research.md.
"""

from __future__ import annotations

import os
import sys

from tools import cli  # first: the quiet start and the log lines
from tools.path_flags import local_path_flag


def main(argv=None):
    from runner.startup_sigterm import startup_sigterm
    from experiments.studies import STUDIES, lookup
    from experiments.study_run import run_study

    argv = sys.argv[1:] if argv is None else list(argv)
    p = cli.parser(__doc__)
    p.add_argument("--study", required=True, help="; ".join(
        f"{name}: {s.summary}" for name, s in sorted(STUDIES.items())))
    p.add_argument("--out", required=True, type=local_path_flag)
    p.add_argument("--only", action="append", default=[], help="run this member (repeatable)")
    p.add_argument("--emit", action="store_true", help="write launch scripts, run nothing")
    p.add_argument("--collect", action="store_true", help="only write the report")
    args, files, bindings = cli.parse(p, argv)
    if files:
        p.error("a study's gin files are in its sweep file (gin/studies/NAME.gin)")
    study = lookup(args.study)
    with startup_sigterm():  # SIGTERM stops the member in training (saved) and the study
        report = run_study(study, args.out, bindings, only=args.only, emit_only=args.emit,
                           collect=args.collect,
                           relaunch_flags=[a for a in argv if a.startswith("--gin.")])
    if report is not None:
        cli.show_report(os.path.join(args.out, "study.md"))
    return report


if __name__ == "__main__":
    main()
