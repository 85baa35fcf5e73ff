"""Reproduce the character-aware vs character-blind spelling gap (Liu et al. 2022) on WikiSpell.

Trains the models of gin/runs/wikispell_{t5,byt5[,hybrid]}.gin one after another (each
resumes or is skipped when already trained in OUT/NAME), decodes the test words of every
frequency bucket greedily and prints exact match per bucket side by side; OUT/results.json
and OUT/table.md keep the numbers.

    python -m tools.wikispell_compare --out=runs/wikispell [--steps=2000] [--per_bucket=1000]
        [--models=t5,byt5,hybrid]

With --pretrain_steps=N (0: none, as above) each model is also pretrained N steps by span
corruption of words at their real frequencies and fine-tuned from that checkpoint
(experiments/wikispell_pretrained.py); OUT/table.csv and OUT/wikispell_pretrained.png are added.
The CPU-sized run (docs/research.md):

    python -m tools.wikispell_compare --out=runs/wikispell_pretrained --pretrain_steps=600 \
        --steps=t5=1000,byt5=300 --per_bucket=200 --gin=EVAL_EVERY=0
"""

from __future__ import annotations

import os

from tools import cli  # first: the quiet start and the log lines
from tools.path_flags import local_path_flag


def parse_steps(p, text: str | None, per_model: bool):
    """None, an int, or (per_model) {model: int} from `N` or `MODEL=N,MODEL=N`."""
    if text is None:
        return None
    try:
        if "=" not in text:
            return int(text)
        if per_model:
            return {k.strip(): int(v) for k, v in (kv.split("=") for kv in text.split(","))}
    except ValueError:
        pass
    p.error(f"--steps={text!r}: expected N" + (" or MODEL=N,..." if per_model else
                                               " (MODEL=N needs --pretrain_steps)"))


def main(argv=None) -> dict:
    from runner.gin_args import split_gin_args
    from experiments.wikispell_gap import compare, title

    p = cli.parser(__doc__)
    p.add_argument("--out", default="runs/wikispell", type=local_path_flag)
    p.add_argument("--models", default="t5,byt5")
    p.add_argument("--steps", default=None,
                   help="override TRAIN_STEPS: N for every model, or MODEL=N,... (with "
                        "--pretrain_steps)")
    p.add_argument("--per_bucket", type=int, default=1000, help="test words per bucket")
    p.add_argument("--gin", action="append", default=[],
                   help="extra gin binding NAME=VALUE for every model (repeatable)")
    p.add_argument("--pretrain_steps", type=int, default=0,
                   help="pretrain each model this many steps first (0: no pretraining)")
    p.add_argument("--pretrain_gin", action="append", default=[],
                   help="extra gin binding NAME=VALUE for pretraining only (repeatable)")
    args = p.parse_args(argv)

    def gin(values):
        return split_gin_args([g if g.startswith("--gin.") else f"--gin.{g}"
                               for g in values])[1]

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    steps = parse_steps(p, args.steps, args.pretrain_steps > 0)
    if args.pretrain_steps < 0:
        p.error(f"--pretrain_steps={args.pretrain_steps} must be >= 0")
    if args.pretrain_gin and not args.pretrain_steps:
        p.error("--pretrain_gin needs --pretrain_steps > 0")
    if args.pretrain_steps:
        from experiments.wikispell_pretrained import compare_pretrained

        results = compare_pretrained(args.out, models, steps, args.pretrain_steps,
                                     args.per_bucket, gin(args.gin), gin(args.pretrain_gin))
    else:
        results = compare(args.out, models, steps, args.per_bucket, gin(args.gin))
    cli.show_report(os.path.join(args.out, "table.md"), title(args.per_bucket) + "\n\n")
    return results


if __name__ == "__main__":
    main()
