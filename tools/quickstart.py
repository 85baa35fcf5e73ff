"""Quickstart: can a model spell? Char-blind T5 vs char-aware ByT5 on WikiSpell, on 8 CPU devices.

Trains a tiny T5 over a SentencePiece vocabulary (frequent words are single pieces) and a
tiny ByT5 over bytes with the same parameter budget, on the 10,000 WikiSpell training words,
then prints test exact match per frequency bucket side by side (Liu et al. 2022 found the
character-aware model far better, most of all where the char-blind one sees whole words).
Fast settings; the full run is `python -m tools.wikispell_compare`. Run it again and it
resumes or, when trained, only evaluates.
"""

from __future__ import annotations

import os

from tools import cli  # first: the quiet start and the log lines
from tools.path_flags import local_path_flag


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--out", default="runs/quickstart", type=local_path_flag)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--per_bucket", type=int, default=200, help="test words per bucket")
    args = p.parse_args(argv)
    from experiments.wikispell_gap import compare, title

    results = compare(args.out, ["t5", "byt5"], args.steps, args.per_bucket,
                      ["EVAL_EVERY = 0", "CHECKPOINT_EVERY = 300",
                       "training.ScheduleConfig.warmup_steps = 50"])
    cli.show_report(os.path.join(args.out, "table.md"), title(args.per_bucket) + "\n\n")
    return results


if __name__ == "__main__":
    main()
