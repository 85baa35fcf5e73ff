"""Scaling by architecture (Tay et al. 2022, "Scaling Laws vs Model Architectures"): a grid
of sizes per architecture, each trained for the same steps; final eval loss against
training FLOPs C (FLOPs per step x steps, model_zoo/flops.py) and parameters N, with a
power law loss = a * x^-b fitted per architecture in log space (experiments/power_law.py).

The architecture is read from each member's ModelConfig: Universal (`universal` set),
Switch (top-1 MoE), ST-MoE (top-k MoE, k > 1) or dense."""

from __future__ import annotations

import numpy as np

from experiments.power_law import fit_power_law
from experiments.studies import plots
from experiments.study_run import Report

COLUMNS = ["member", "architecture", "d_model", "params", "train_FLOPs", "final_eval_loss"]
FIT_COLUMNS = ["architecture", "points", "b (FLOPs)", "a (FLOPs)", "r2 (FLOPs)",
               "b (params)", "a (params)", "r2 (params)"]


def architecture(model) -> str:
    if model.universal is not None:
        return "universal"
    if model.moe is not None:
        return "switch" if model.moe.num_selected_experts == 1 else "st_moe"
    return "dense"


def _by_arch(curves) -> dict:
    out = {}
    for c in sorted(curves, key=lambda c: (architecture(c.model), c.train_flops)):
        out.setdefault(architecture(c.model), []).append(c)
    return out


def analyse(curves) -> Report:
    rows = [{"member": c.member, "architecture": architecture(c.model),
             "d_model": c.model.d_model, "params": c.params, "train_FLOPs": c.train_flops,
             "final_eval_loss": c.final_eval_loss}
            for group in _by_arch(curves).values() for c in group]
    fits, lines = {}, ["| " + " | ".join(FIT_COLUMNS) + " |", "|" + "---|" * len(FIT_COLUMNS)]
    for arch, group in _by_arch(curves).items():
        losses = [c.final_eval_loss for c in group]
        if len({c.train_flops for c in group}) < 2:
            lines.append(f"| {arch} | {len(group)} | (one size: no fit) |" + " |" * 5)
            continue
        by_flops = fit_power_law([c.train_flops for c in group], losses)
        by_params = fit_power_law([c.params for c in group], losses)
        fits[arch] = {"flops": by_flops, "params": by_params}
        lines.append(f"| {arch} | {len(group)} | {by_flops.b:.4f} | {by_flops.a:.4g} | "
                     f"{by_flops.r2:.3f} | {by_params.b:.4f} | {by_params.a:.4g} | "
                     f"{by_params.r2:.3f} |")
    notes = ["Power law loss = a * x^-b per architecture, least squares in log-log space "
             "(x: training FLOPs, or parameters):", "\n".join(lines)]
    return Report(COLUMNS, rows, notes, fits)


def plot(curves, report: Report, path: str) -> None:
    fig, axes = plots.figure(1, 2)
    for arch, group in _by_arch(curves).items():
        losses = [c.final_eval_loss for c in group]
        for ax, key, xs in ((axes[0][0], "flops", [c.train_flops for c in group]),
                            (axes[0][1], "params", [c.params for c in group])):
            points = ax.scatter(xs, losses, label=arch)
            fit = report.fits.get(arch, {}).get(key)
            if fit is not None:
                grid = np.geomspace(min(xs), max(xs), 20)
                ax.plot(grid, fit(grid), color=points.get_facecolor()[0], linewidth=1,
                        label=f"{arch}: b={fit.b:.3f}")
    for ax, name in zip(axes[0], ("training FLOPs", "parameters"), strict=True):
        ax.set_xscale("log")
        plots.log_loss_axis(ax)
        ax.set_xlabel(name)
        ax.set_ylabel("final eval loss")
        ax.legend(fontsize=7)
    axes[0][0].set_title("Scaling: loss = a * C^-b")
    plots.save(fig, path)
