"""A study: a sweep (gin/studies/NAME.gin) plus an analysis of its members' logged curves.

`run_study(name, out)` trains the sweep's pending members (experiments.sweep_run: checked first,
one after another, resumable, OUT/results.*), then reads every member's metrics.jsonl into
a Curve and has the study turn the curves into a Report: OUT/study.md, OUT/study.csv and
OUT/study.png. The studies are registered in experiments/studies/__init__.py (`lookup`).

Wall time is the loop's `seconds_per_step` summed over the logged intervals (evaluation is
not in it); the first interval of a run holds XLA compilation, so its per-step time is
replaced by the median of the run's other intervals.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
from typing import Callable

import numpy as np

from experiments import sweep_run as sweep_lib
from runner.gin_flags import resolve_gin_file
from experiments.sweep_config import read
from training.metrics_log import read_records

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Curve:
    """One member's logged metrics. `train`: arrays keyed step, loss, seconds (cumulative
    train time), loss_scale, skipped (cumulative skipped steps); `eval`: step, loss, seconds
    and every "eval/..." metric; `tasks`: the task each branch (a plain model: "") trained on."""
    member: str
    bindings: dict
    model: object            # its ModelConfig
    params: int
    flops_per_step: float
    train: dict
    eval: dict
    tasks: dict = dataclasses.field(default_factory=dict)  # {branch: task}; {"": task} plain

    @property
    def final_eval_loss(self) -> float:
        return float(self.eval["loss"][-1])

    @property
    def train_flops(self) -> float:
        return self.flops_per_step * float(self.train["step"][-1])


@dataclasses.dataclass(frozen=True)
class Report:
    """A study's table (rows of {column: value}), Markdown notes under it (fits, speedups,
    caveats) and the fitted numbers the notes state (`fits`, for tests and readers)."""
    columns: list
    rows: list
    notes: list = dataclasses.field(default_factory=list)
    fits: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Study:
    name: str
    sweep: str                                     # the sweep file, relative to gin/
    analyse: Callable[[list], Report]
    plot: Callable[[list, Report, str], None]      # (curves, report, png path)
    summary: str = ""


def _cumulative_seconds(steps: np.ndarray, rates: np.ndarray) -> np.ndarray:
    if len(rates) > 1:
        rates = rates.copy()
        rates[0] = np.median(rates[1:])  # the first interval compiled the step
    intervals = np.diff(np.concatenate([[0], steps]))
    return np.cumsum(intervals * rates)


def _is_eval(record: dict) -> bool:
    return any(k.startswith("eval/") for k in record)


def read_curves(model_dir: str) -> tuple[dict, dict]:
    """(train, eval) arrays from model_dir's metrics (training/metrics_log.py). `eval` also
    holds every logged "eval/..." metric under its name (a TreeDNN tree's per-branch
    "eval/BRANCH/loss", "eval/BRANCH/accuracy", ...); its "loss" is "eval/loss" where logged."""
    train, by_step = [], {}
    for record in read_records(model_dir):
        if _is_eval(record):  # evaluators of one step may log apart (a tree: per branch)
            by_step.setdefault(record["step"], {}).update(record)
        else:
            train.append(record)
    evals = [by_step[step] for step in sorted(by_step)]
    if not train or not evals:
        raise ValueError(f"{model_dir}'s metrics have no {'train' if not train else 'eval'} "
                         "records; a study needs both (set EVAL_EVERY and an eval feed)")
    steps = np.array([r["step"] for r in train], np.float64)
    seconds = _cumulative_seconds(steps, np.array([r["seconds_per_step"] for r in train]))
    out = {"step": steps, "loss": np.array([r["loss"] for r in train]), "seconds": seconds,
           "loss_scale": np.array([r.get("loss_scale", 1.0) for r in train]),
           "skipped": np.array([r.get("skipped", 0.0) for r in train])}
    eval_steps = np.array([r["step"] for r in evals], np.float64)
    metrics = {k: np.array([r.get(k, np.nan) for r in evals], np.float64)
               for k in sorted({k for r in evals for k in r if k.startswith("eval/")})}
    if "eval/loss" in metrics:
        metrics["loss"] = metrics["eval/loss"]
    return out, {"step": eval_steps, **metrics,
                 "seconds": np.interp(eval_steps, np.concatenate([[0], steps]),
                                      np.concatenate([[0], seconds]))}


def curves(sweep_path: str, out: str, bindings: list[str],
           only: list[str] | None = None) -> list[Curve] | None:
    """Every member's Curve (those named in `only`), or None while one has not finished."""
    from experiments.model_size import param_count, train_flops_per_step

    cfg = read(sweep_path)
    members = [m for m in cfg.expand() if not only or m.name in only]
    if any(sweep_lib.finished(out, m) is None for m in members):
        return None
    found = []
    for member in members:
        run, _ = sweep_lib.member_run(cfg, member, list(bindings))
        model, flops = run.model, train_flops_per_step(run)
        train, evals = read_curves(os.path.join(out, member.name))
        tasks = ({"": run.feed.mixture_or_task_name} if run.branch_feed is None
                 else dict(run.branch_feed.tasks))
        found.append(Curve(member.name, dict(member.bindings), model, param_count(model), flops,
                           train, evals, tasks))
    return found


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.4g}"
    return "" if value is None else str(value)


def markdown_table(report: Report) -> str:
    lines = ["| " + " | ".join(report.columns) + " |", "|" + "---|" * len(report.columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in report.columns) + " |"
              for r in report.rows]
    return "\n".join(lines)


def write_report(study: Study, found: list[Curve], out: str) -> Report:
    report = study.analyse(found)
    with open(os.path.join(out, "study.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(report.columns)
        writer.writerows([_cell(r.get(c)) for c in report.columns] for r in report.rows)
    text = "\n\n".join([markdown_table(report)] + list(report.notes))
    with open(os.path.join(out, "study.md"), "w") as f:
        f.write(text + "\n")
    study.plot(found, report, os.path.join(out, "study.png"))
    return report


def run_study(study: Study, out: str, bindings: list[str] = (), only: list[str] = (),
              emit_only: bool = False, collect: bool = False,
              relaunch_flags: list[str] = ()) -> Report | None:
    """Train the study's pending members (see experiments.sweep_run.sweep; `only`: these members
    alone), then write its report; None while members are missing (run again to resume)."""
    path = resolve_gin_file(study.sweep)
    only = list(only) or None
    sweep_lib.sweep(path, out, list(bindings), only=only, emit_only=emit_only, collect=collect,
                    relaunch_flags=list(relaunch_flags))
    if emit_only:
        return None
    found = curves(path, out, list(bindings), only)
    if found is None:
        logger.warning(f"study {study.name}: members are missing; run again to finish them")
        return None
    report = write_report(study, found, out)
    logger.info(f"study {study.name}: {out}/study.md, study.csv, study.png")
    return report
