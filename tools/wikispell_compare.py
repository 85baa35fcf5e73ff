"""Reproduce the character-aware vs character-blind spelling gap (Liu et al. 2022) on WikiSpell.

Trains the models of gin/runs/wikispell_{t5,byt5[,hybrid]}.gin one after another (each
resumes or is skipped when already trained in OUT/NAME), decodes the test words of every
frequency bucket greedily and prints exact match per bucket side by side; OUT/results.json
and OUT/table.md keep the numbers.

    python -m tools.wikispell_compare --out=runs/wikispell [--steps=2000] [--per_bucket=1000]
        [--models=t5,byt5,hybrid]
"""

from __future__ import annotations

import argparse


def main(argv=None) -> dict:
    from runner.gin_flags import split_gin_args
    from runner.wikispell_compare import compare

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/wikispell")
    p.add_argument("--models", default="t5,byt5")
    p.add_argument("--steps", type=int, default=None, help="override TRAIN_STEPS")
    p.add_argument("--per_bucket", type=int, default=1000, help="test words per bucket")
    p.add_argument("--gin", action="append", default=[],
                   help="extra gin binding NAME=VALUE for every model (repeatable)")
    args = p.parse_args(argv)
    bindings = split_gin_args([g if g.startswith("--gin.") else f"--gin.{g}"
                               for g in args.gin])[1]
    return compare(args.out, [m.strip() for m in args.models.split(",") if m.strip()],
                   args.steps, args.per_bucket, bindings)


if __name__ == "__main__":
    main()
