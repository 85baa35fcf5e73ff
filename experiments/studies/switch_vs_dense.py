"""Switch vs dense (Fedus et al. 2021, Section 3, step and time basis): FLOP-matched Switch
models (top-1 routing, several expert counts) and the dense model with the same d_ff, on
span corruption. The speedup of a Switch model is the dense model's steps (or seconds) to
its final eval loss over the Switch model's steps (seconds) to that loss; the paper
reports Switch-Base (64 experts) reaching T5-Base's quality about 7x sooner.

Steps and seconds to a loss are linear interpolations between eval points; a model that
never gets there has no speedup (blank)."""

from __future__ import annotations

import math

import numpy as np

from experiments.studies import plots
from experiments.study_run import Report

COLUMNS = ["member", "model", "experts", "params", "train_GFLOPs_per_step",
           "final_eval_loss", "steps_to_dense_loss", "seconds_to_dense_loss",
           "speedup_steps", "speedup_seconds", "seconds_per_step"]


def label(curve) -> str:
    return "dense" if curve.model.moe is None else f"switch-{curve.model.moe.num_experts}"


def first_reach(xs: np.ndarray, losses: np.ndarray, target: float) -> float:
    """The x (steps or seconds) where the loss curve first reaches `target`, interpolated
    between the two eval points around it; nan if never."""
    for i, loss in enumerate(losses):
        if loss <= target:
            if i == 0:
                return float(xs[0])
            x0, x1, l0, l1 = xs[i - 1], xs[i], losses[i - 1], loss
            return float(x0 + (x1 - x0) * (l0 - target) / (l0 - l1))
    return math.nan


def analyse(curves) -> Report:
    dense = [c for c in curves if c.model.moe is None]
    if len(dense) != 1:
        raise ValueError(f"switch_vs_dense needs exactly one dense member (model_zoo.model.moe "
                         f"= None); got {[c.member for c in dense]}")
    dense = dense[0]
    target = dense.final_eval_loss
    base_steps = first_reach(dense.eval["step"], dense.eval["loss"], target)
    base_seconds = first_reach(dense.eval["seconds"], dense.eval["loss"], target)
    rows, fits = [], {}
    for c in sorted(curves, key=lambda c: 0 if c.model.moe is None else c.model.moe.num_experts):
        steps = first_reach(c.eval["step"], c.eval["loss"], target)
        seconds = first_reach(c.eval["seconds"], c.eval["loss"], target)
        name = label(c)
        rows.append({
            "member": c.member, "model": name,
            "experts": 0 if c.model.moe is None else c.model.moe.num_experts,
            "params": c.params, "train_GFLOPs_per_step": c.flops_per_step / 1e9,
            "final_eval_loss": c.final_eval_loss, "steps_to_dense_loss": steps,
            "seconds_to_dense_loss": seconds, "speedup_steps": base_steps / steps,
            "speedup_seconds": base_seconds / seconds,
            "seconds_per_step": float(c.train["seconds"][-1] / c.train["step"][-1])})
        fits[name] = {k: rows[-1][k] for k in ("speedup_steps", "speedup_seconds")}
    notes = [f"Target: the dense model's final eval loss, {target:.4f} at step "
             f"{int(dense.eval['step'][-1])}. Speedup = dense steps (seconds) to the target / "
             "the model's steps (seconds) to it; blank: never reached."]
    return Report(COLUMNS, rows, notes, fits)


def plot(curves, report: Report, path: str) -> None:
    fig, axes = plots.figure(1, 2)
    target = next(c for c in curves if c.model.moe is None).final_eval_loss
    for c in sorted(curves, key=lambda c: 0 if c.model.moe is None else c.model.moe.num_experts):
        for ax, x in zip(axes[0], ("step", "seconds"), strict=True):
            ax.plot(c.eval[x], c.eval["loss"], marker=".", label=label(c))
    for ax, name in zip(axes[0], ("training step", "training seconds (compile excluded)"),
                        strict=True):
        ax.axhline(target, color="gray", linestyle="--", linewidth=0.8)
        ax.set_xlabel(name)
        ax.set_ylabel("eval loss")
        ax.legend(fontsize=8)
    axes[0][0].set_title("Switch vs dense: eval loss")
    plots.save(fig, path)
