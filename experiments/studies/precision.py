"""Precision (Micikevicius et al. 2018, "Mixed Precision Training"): the same run in
float32, bfloat16 and float16 with dynamic loss scaling (training/loss_scale.py): fp32
master weights and optimizer state in all three; loss curves, the loss-scale trace and
the skipped (non-finite) steps. The paper's claim: mixed precision with loss scaling
matches fp32 training."""

from __future__ import annotations

import numpy as np

from experiments.studies import plots
from experiments.study_run import Report

COLUMNS = ["member", "dtype", "final_train_loss", "final_eval_loss", "eval_loss_vs_fp32",
           "skipped_steps", "final_loss_scale", "min_loss_scale", "seconds_per_step"]
ORDER = ("float32", "bfloat16", "float16")


def _sorted(curves):
    return sorted(curves, key=lambda c: ORDER.index(c.model.dtype)
                  if c.model.dtype in ORDER else len(ORDER))


def analyse(curves) -> Report:
    fp32 = [c for c in curves if c.model.dtype == "float32"]
    reference = fp32[0].final_eval_loss if fp32 else float("nan")
    rows, fits = [], {}
    for c in _sorted(curves):
        row = {"member": c.member, "dtype": c.model.dtype,
               "final_train_loss": float(c.train["loss"][-1]),
               "final_eval_loss": c.final_eval_loss,
               "eval_loss_vs_fp32": c.final_eval_loss - reference,
               "skipped_steps": int(c.train["skipped"][-1]),
               "final_loss_scale": float(c.train["loss_scale"][-1]),
               "min_loss_scale": float(np.min(c.train["loss_scale"])),
               "seconds_per_step": float(c.train["seconds"][-1] / c.train["step"][-1])}
        rows.append(row)
        fits[c.model.dtype] = row
    notes = ["eval_loss_vs_fp32: final eval loss minus the float32 run's. The loss scale is "
             "the one the logged step used (1: no scaling); skipped steps had non-finite "
             "gradients and left the params unchanged."]
    return Report(COLUMNS, rows, notes, fits)


def plot(curves, report: Report, path: str) -> None:
    fig, axes = plots.figure(2, 2)
    (loss_ax, eval_ax), (scale_ax, skip_ax) = axes
    for c in _sorted(curves):
        loss_ax.plot(c.train["step"], c.train["loss"], label=c.model.dtype, linewidth=1)
        eval_ax.plot(c.eval["step"], c.eval["loss"], marker=".", label=c.model.dtype)
        scale_ax.plot(c.train["step"], c.train["loss_scale"], label=c.model.dtype)
        skip_ax.plot(c.train["step"], c.train["skipped"], label=c.model.dtype)
    for ax, name in ((loss_ax, "train loss"), (eval_ax, "eval loss"),
                     (scale_ax, "loss scale"), (skip_ax, "skipped steps (total)")):
        ax.set_xlabel("training step")
        ax.set_ylabel(name)
        ax.legend(fontsize=8)
    scale_ax.set_yscale("log", base=2)
    loss_ax.set_title("Precision: fp32 / bf16 / fp16 + dynamic loss scaling")
    plots.save(fig, path)
