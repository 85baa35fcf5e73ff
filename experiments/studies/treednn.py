"""TreeDNN (Singh et al. 2022, arXiv 2212.03474): a tree with a shared trunk and one branch
per dataset against one separate model per dataset and one shared model, at matched steps.

Members (gin/studies/treednn.gin) are plain models each trained on one dataset (the
separate models) and trees whose branches train on all the datasets at once; a tree split at
the top with no per-branch head is the shared model. The table has one row per arm: the
separate models together, then each tree by its split (trunk layers of the encoder + the
decoder). Per dataset: the teacher-forced eval's token accuracy and loss on its validation
examples at the end of training; parameters stored (every model, or the trunk and every
branch), parameters loaded to serve one dataset (one model, or the trunk and one branch)
and train seconds (compilation and evaluation excluded; the separate models' summed)."""

from __future__ import annotations

import numpy as np

from experiments.studies import plots
from experiments.study_run import Report
from model_zoo.flops import param_counts

SEPARATE = "separate"


def _arm(curve) -> str:
    tree = curve.model.tree
    if tree is None:
        return SEPARATE
    depth = curve.model.num_encoder_layers + curve.model.num_decoder_layers
    split = tree.encoder_split + tree.decoder_split
    if split == depth and not tree.branch_head:
        return "shared"
    return f"tree_split_{tree.encoder_split}+{tree.decoder_split}"


def _final(curve, key: str) -> float:
    return float(curve.eval[key][-1]) if key in curve.eval else float("nan")


def _datasets(curves) -> dict[str, str]:
    """{dataset (branch name): task}, the same in every tree member."""
    trees = [c.tasks for c in curves if c.model.tree is not None]
    if not trees or any(t != trees[0] for t in trees):
        raise ValueError("the treednn study needs tree members that all name the same branch "
                         f"tasks; got {trees}")
    return dict(trees[0])


def _rows_of_separate(separate: list, datasets: dict) -> dict:
    by_task = {c.tasks[""]: c for c in separate}
    missing = sorted(set(datasets.values()) - set(by_task))
    if missing or len(by_task) != len(separate):
        raise ValueError(f"the treednn study needs one separate model per dataset; tasks "
                         f"without one: {missing}, separate models' tasks: "
                         f"{[c.tasks[''] for c in separate]}")
    row = {"arm": SEPARATE, "members": len(separate),
           "steps": int(sum(c.train["step"][-1] for c in separate)),
           "params_stored": sum(param_counts(c.model)["stored"] for c in separate),
           "params_served": max(param_counts(c.model)["served"] for c in separate),
           "train_seconds": float(sum(c.train["seconds"][-1] for c in separate))}
    for name, task in datasets.items():
        row[f"accuracy_{name}"] = _final(by_task[task], "eval/accuracy")
        row[f"loss_{name}"] = _final(by_task[task], "eval/loss")
    return row


def _row_of_tree(curve, datasets: dict) -> dict:
    counts = param_counts(curve.model)
    row = {"arm": _arm(curve), "members": 1, "steps": int(curve.train["step"][-1]),
           "params_stored": counts["stored"], "params_served": counts["served"],
           "train_seconds": float(curve.train["seconds"][-1])}
    for name in datasets:
        row[f"accuracy_{name}"] = _final(curve, f"eval/{name}/accuracy")
        row[f"loss_{name}"] = _final(curve, f"eval/{name}/loss")
    return row


def analyse(curves) -> Report:
    datasets = _datasets(curves)
    separate = [c for c in curves if c.model.tree is None]
    trees = sorted((c for c in curves if c.model.tree is not None),
                   key=lambda c: -(c.model.tree.encoder_split + c.model.tree.decoder_split))
    rows = ([_rows_of_separate(separate, datasets)] if separate else []) + [
        _row_of_tree(c, datasets) for c in trees]
    for row in rows:
        row["mean_accuracy"] = float(np.mean([row[f"accuracy_{d}"] for d in datasets]))
    columns = (["arm", "members", "steps"] + [f"accuracy_{d}" for d in datasets]
               + ["mean_accuracy"] + [f"loss_{d}" for d in datasets]
               + ["params_stored", "params_served", "train_seconds"])
    steps = sorted({r["steps"] for r in rows})
    notes = [f"Datasets (branch: task): {datasets}. Accuracy: teacher-forced token accuracy "
             "of the targets (EOS included) on the first validation examples of each dataset "
             "at the last step; loss: their per-token cross entropy. Train seconds exclude "
             "compilation and evaluation.",
             "Matched steps: every arm trains " + (f"{steps[0]} steps in all." if len(steps) == 1
                                                    else f"different totals {steps}: NOT matched.")]
    fits = {r["arm"]: {k: v for k, v in r.items() if k != "arm"} for r in rows}
    return Report(columns, rows, notes, fits)


def plot(curves, report: Report, path: str) -> None:
    datasets = [c[len("accuracy_"):] for c in report.columns
                if c.startswith("accuracy_")]
    arms = [r["arm"] for r in report.rows]
    fig, axes = plots.figure(1, 2, width=5.5)
    acc, params = axes[0]
    width = 0.8 / len(datasets)
    x = np.arange(len(arms))
    for i, name in enumerate(datasets):
        acc.bar(x + i * width, [r[f"accuracy_{name}"] for r in report.rows], width, label=name)
    acc.set_xticks(x + width * (len(datasets) - 1) / 2, arms, rotation=20, fontsize=8)
    acc.set_ylabel("eval token accuracy")
    acc.set_title("per-dataset accuracy at matched steps")
    acc.legend(fontsize=8)
    params.bar(x - 0.2, [r["params_stored"] / 1e6 for r in report.rows], 0.4, label="stored")
    params.bar(x + 0.2, [r["params_served"] / 1e6 for r in report.rows], 0.4,
               label="loaded to serve one dataset")
    params.set_xticks(x, arms, rotation=20, fontsize=8)
    params.set_ylabel("parameters (M)")
    params.set_title("storage and serving")
    params.legend(fontsize=8)
    plots.save(fig, path)
