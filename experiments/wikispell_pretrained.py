"""WikiSpell after pretraining: does the char-blind model now spell frequent words best?

Liu et al. 2022 found pretrained T5 best on frequent words and worse on rare ones, and ByT5
near-perfect everywhere. Each model of experiments/wikispell_gap.py is trained three ways in
OUT: NAME (WikiSpell only, as that comparison does), pretrain_NAME (span corruption of
gin/runs/wikispell_pretrain_NAME.gin: words at their real frequencies,
tasks/pretraining/zipf_corpus.py) and NAME_pretrained (WikiSpell from pretrain_NAME's
checkpoint). Every member resumes, or is only evaluated when trained, like a sweep. Exact
match per bucket goes to OUT/results.json, OUT/table.md, OUT/table.csv and a plot
OUT/wikispell_pretrained.png.
"""

from __future__ import annotations

import csv
import json
import logging
import os

from experiments.wikispell_gap import LABELS, RUNS, check_models, table, train_and_evaluate

logger = logging.getLogger(__name__)

PRETRAIN_RUNS = {"t5": "runs/wikispell_pretrain_t5.gin",
                 "byt5": "runs/wikispell_pretrain_byt5.gin"}


def compare_pretrained(out: str, models: list[str], steps: int | dict | None,
                       pretrain_steps: int, per_bucket: int = 1000, bindings: list[str] = (),
                       pretrain_bindings: list[str] = ()) -> dict:
    """{key: result} for NAME and NAME_pretrained of each of `models` (keys of PRETRAIN_RUNS).

    `steps`: WikiSpell steps for every model, {model: steps} (the others keep the gin
    file's), or None. `bindings` are gin bindings for every stage, `pretrain_bindings` for
    pretraining only (after `bindings`).
    """
    check_models(models, per_bucket)
    no_pretraining = [m for m in models if m not in PRETRAIN_RUNS]
    if no_pretraining:
        raise ValueError(f"models={models}: {no_pretraining} have no pretraining run; "
                         f"choose from {sorted(PRETRAIN_RUNS)}")
    if pretrain_steps < 1:
        raise ValueError(f"pretrain_steps={pretrain_steps} must be >= 1")
    if isinstance(steps, dict) and set(steps) - set(models):
        raise ValueError(f"steps={steps} names {sorted(set(steps) - set(models))}, which are "
                         f"not among models={models}")
    results, labels = {}, {}
    for name in models:
        n = steps.get(name) if isinstance(steps, dict) else steps
        finetune = ([f"TRAIN_STEPS = {n}"] if n else []) + list(bindings)
        gin_file, targets_length = RUNS[name]
        results[name] = train_and_evaluate([gin_file], os.path.join(out, name),
                                           targets_length, per_bucket, finetune)
        labels[name] = f"{LABELS[name]}, no pretraining"
        logger.info(f"wikispell: {json.dumps({name: results[name]})}")
        pretrain_dir = os.path.abspath(os.path.join(out, f"pretrain_{name}"))
        pretrain = train_and_evaluate(
            [PRETRAIN_RUNS[name]], pretrain_dir, None, per_bucket,
            [f"TRAIN_STEPS = {pretrain_steps}"] + list(bindings) + list(pretrain_bindings))
        key = f"{name}_pretrained"
        results[key] = train_and_evaluate(
            [gin_file], os.path.join(out, key), targets_length, per_bucket,
            finetune + [f"INITIAL_CHECKPOINT_PATH = {pretrain_dir!r}"])
        results[key]["pretrain_seconds"] = pretrain["train_seconds"]
        labels[key] = f"{LABELS[name]}, pretrained {pretrain_steps} steps"
        logger.info(f"wikispell: {json.dumps({key: results[key]})}")
    write(out, results, labels, {"per_bucket": per_bucket, "steps": steps,
                                 "pretrain_steps": pretrain_steps})
    return results


def rows(results: dict) -> list[dict]:
    """One CSV row per (member, bucket): exact match (%), 'all' for the overall figure."""
    from tasks.wikispell import BUCKET_NAMES

    out = []
    for key, r in results.items():
        model, _, pretrained = key.partition("_")
        for bucket in (*BUCKET_NAMES, "all"):
            metric = "exact_match" if bucket == "all" else f"exact_match/{bucket}"
            out.append({"model": model, "pretrained": bool(pretrained), "bucket": bucket,
                        "exact_match": round(r["metrics"][metric], 2)})
    return out


def plot(results: dict, labels: dict, path: str, title: str) -> None:
    """Exact match per frequency bucket, one line per member."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tasks.wikispell import BUCKET_NAMES

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, r in results.items():
        ax.plot(range(len(BUCKET_NAMES)), [r["metrics"][f"exact_match/{b}"] for b in BUCKET_NAMES],
                marker="o", linestyle="-" if key.endswith("_pretrained") else "--",
                label=labels[key])
    ax.set_xticks(range(len(BUCKET_NAMES)),
                  ["top 1%", "1-10%", "10-20%", "20-30%", "bottom 50%"])
    ax.set_xlabel("word frequency bucket (most frequent first)")
    ax.set_ylabel("test exact match (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(out: str, results: dict, labels: dict, settings: dict) -> None:
    os.makedirs(out, exist_ok=True)
    md = table(results, labels)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({**settings, **results}, f, indent=2)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(out, "table.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, ["model", "pretrained", "bucket", "exact_match"])
        writer.writeheader()
        writer.writerows(rows(results))
    plot(results, labels, os.path.join(out, "wikispell_pretrained.png"),
         f"WikiSpell after pretraining ({settings['pretrain_steps']} steps), "
         f"{settings['per_bucket']} test words per bucket")
