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
import json
import os
import time

RUNS = {"t5": ("runs/wikispell_t5.gin", 24), "byt5": ("runs/wikispell_byt5.gin", 48),
        "hybrid": ("runs/wikispell_hybrid.gin", 24)}
LABELS = {"t5": "T5 (char-blind, SentencePiece)", "byt5": "ByT5 (char-aware, bytes)",
          "hybrid": "hybrid (tokens + bytes)"}


def evaluate(model_dir: str, targets_length: int, per_bucket: int,
             batch_size: int = 250) -> dict:
    """Exact match (%) per bucket and overall on the first `per_bucket` test words of each."""
    from model_zoo.decoding import DecodeConfig
    from tasks import wikispell
    from tools.infer import Predictor

    predictor = Predictor(model_dir, decode_config=DecodeConfig(targets_length))
    targets, predictions = [], []
    for bucket in wikispell.BUCKET_NAMES:
        rows = wikispell.examples("test", bucket=bucket)[:per_bucket]
        words = [r["inputs"] for r in rows]
        for start in range(0, len(words), batch_size):
            predictions += [(bucket, p.strip()) for p in
                            predictor.predict(words[start:start + batch_size])]
        targets += [(bucket, r["targets"]) for r in rows]
    return wikispell.exact_match_by_bucket(targets, predictions)


def table(results: dict) -> str:
    from tasks.wikispell import BUCKET_NAMES

    cols = [f"exact_match/{b}" for b in BUCKET_NAMES] + ["exact_match"]
    lines = ["| model | params | " + " | ".join(BUCKET_NAMES) + " | all |",
             "|---" * (len(cols) + 2) + "|"]
    for name, r in results.items():
        cells = " | ".join(f"{r['metrics'][c]:.1f}" for c in cols)
        lines.append(f"| {LABELS[name]} | {r['params'] / 1e3:.0f}k | {cells} |")
    return "\n".join(lines)


def param_count(model_dir: str) -> int:
    import jax
    import numpy as np

    from model_zoo import EncoderDecoder
    from model_zoo.model_def import model_def
    from runner.trained_model import read_model_json

    cfg = read_model_json(model_dir)[0]
    abstract = model_def(lambda r: EncoderDecoder(cfg, rngs=r)).abstract_params()
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/wikispell")
    p.add_argument("--models", default="t5,byt5")
    p.add_argument("--steps", type=int, default=None, help="override TRAIN_STEPS")
    p.add_argument("--per_bucket", type=int, default=1000, help="test words per bucket")
    p.add_argument("--gin", action="append", default=[],
                   help="extra --gin.NAME=VALUE binding for every model (repeatable)")
    args = p.parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in RUNS]
    if unknown or not names:
        p.error(f"--models={args.models!r}: unknown {unknown}; choose from {sorted(RUNS)}")
    if not 1 <= args.per_bucket <= 1000:
        p.error(f"--per_bucket={args.per_bucket} must be in [1, 1000]")

    from tools import train

    results = {}
    for name in names:
        gin_file, targets_length = RUNS[name]
        model_dir = os.path.join(args.out, name)
        flags = [f"--model_dir={model_dir}", f"--gin_file={gin_file}", "--no-progress"]
        flags += [f"--gin.TRAIN_STEPS={args.steps}"] if args.steps else []
        flags += [g if g.startswith("--gin.") else f"--gin.{g}" for g in args.gin]
        start = time.time()
        train.main(flags)
        train_s = time.time() - start
        import gin
        gin.clear_config()
        start = time.time()
        metrics = evaluate(model_dir, targets_length, args.per_bucket)
        results[name] = {"metrics": metrics, "params": param_count(model_dir),
                         "train_seconds": round(train_s, 1),
                         "eval_seconds": round(time.time() - start, 1)}
        print(json.dumps({name: results[name]}))
    md = table(results)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"per_bucket": args.per_bucket, "steps": args.steps, **results}, f, indent=2)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(md + "\n")
    print(f"\nWikiSpell test exact match (%), {args.per_bucket} words per bucket:\n\n{md}\n")
    return results


if __name__ == "__main__":
    main()
