"""The character-aware vs character-blind spelling gap (Liu et al. 2022) on WikiSpell.

Each model of gin/runs/wikispell_{t5,byt5,hybrid}.gin becomes a Run, trains through
runner.train in OUT/NAME (resumed, or only evaluated when already trained), then decodes the
test words of every frequency bucket greedily; exact match per bucket side by side goes to
OUT/results.json and OUT/table.md.
"""

from __future__ import annotations

import json
import logging
import os
import time

from experiments.model_size import param_count

logger = logging.getLogger(__name__)

RUNS = {"t5": ("runs/wikispell_t5.gin", 24), "byt5": ("runs/wikispell_byt5.gin", 48),
        "hybrid": ("runs/wikispell_hybrid.gin", 24)}
LABELS = {"t5": "T5 (char-blind, SentencePiece)", "byt5": "ByT5 (char-aware, bytes)",
          "hybrid": "hybrid (tokens + bytes)"}


def evaluate(model_dir: str, targets_length: int, per_bucket: int,
             batch_size: int = 250, config=None) -> dict:
    """Exact match (%) per bucket and overall on the first `per_bucket` test words of each
    (of WikiSpell as `config`, a WikiSpellConfig, draws it; None: the defaults)."""
    from model_zoo.decoding import DecodeConfig
    from inference.predictor import Predictor
    from tasks import wikispell

    predictor = Predictor(model_dir, decode_config=DecodeConfig(targets_length))
    targets, predictions = [], []
    for bucket in wikispell.BUCKET_NAMES:
        rows = wikispell.examples("test", config, bucket=bucket)[:per_bucket]
        words = [r["inputs"] for r in rows]
        for start in range(0, len(words), batch_size):
            predictions += [(bucket, p.strip()) for p in
                            predictor.predict(words[start:start + batch_size])]
        targets += [(bucket, r["targets"]) for r in rows]
    return wikispell.exact_match_by_bucket(targets, predictions)


def table(results: dict, labels: dict[str, str] = LABELS) -> str:
    """Markdown: one row per member (labels[key]), exact match per bucket and overall."""
    from tasks.wikispell import BUCKET_NAMES

    cols = [f"exact_match/{b}" for b in BUCKET_NAMES] + ["exact_match"]
    lines = ["| model | params | " + " | ".join(BUCKET_NAMES) + " | all |",
             "|---" * (len(cols) + 2) + "|"]
    for name, r in results.items():
        cells = " | ".join(f"{r['metrics'][c]:.1f}" for c in cols)
        lines.append(f"| {labels[name]} | {r['params'] / 1e3:.0f}k | {cells} |")
    return "\n".join(lines)


def train_and_evaluate(gin_files: list[str], model_dir: str, targets_length: int | None,
                       per_bucket: int, bindings: list[str]) -> dict:
    """Train one member in model_dir (resumed, or only evaluated when trained); its numbers.

    targets_length None: train only (a pretraining stage, which has no WikiSpell metric).
    """
    from runner.gin_flags import run_from_gin
    from runner.train import train

    run, records = run_from_gin(gin_files, list(bindings))
    start = time.time()
    train(run, model_dir, progress=False, records=records)
    result = {"params": param_count(run.model), "train_seconds": round(time.time() - start, 1)}
    if targets_length is not None:
        start = time.time()
        metrics = evaluate(model_dir, targets_length, per_bucket,
                           config=run.feed.task_settings.wikispell)
        result = {"metrics": metrics, **result, "eval_seconds": round(time.time() - start, 1)}
    return result


def check_models(models: list[str], per_bucket: int) -> None:
    unknown = [m for m in models if m not in RUNS]
    if unknown or not models:
        raise ValueError(f"models={models}: unknown {unknown}; choose from {sorted(RUNS)}")
    if not 1 <= per_bucket <= 1000:
        raise ValueError(f"per_bucket={per_bucket} must be in [1, 1000]")


def title(per_bucket: int) -> str:
    """The heading a CLI prints above table.md."""
    return f"WikiSpell test exact match (%), {per_bucket} words per bucket:"


def compare(out: str, models: list[str], steps: int | None = None, per_bucket: int = 1000,
            bindings: list[str] = ()) -> dict:
    """Train and evaluate `models` (keys of RUNS); `bindings` are gin bindings for all."""
    check_models(models, per_bucket)
    results = {}
    for name in models:
        gin_file, targets_length = RUNS[name]
        results[name] = train_and_evaluate(
            [gin_file], os.path.join(out, name), targets_length, per_bucket,
            ([f"TRAIN_STEPS = {steps}"] if steps else []) + list(bindings))
        logger.info(f"wikispell: {json.dumps({name: results[name]})}")
    md = table(results)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"per_bucket": per_bucket, "steps": steps, **results}, f, indent=2)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(md + "\n")
    return results
