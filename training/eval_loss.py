"""The teacher-forced eval: per-token loss, z-loss and accuracy over an eval feed's batches.

`EvalLoss(trainer, make_batches)` is an evaluator (training/evaluator.py): each `run` reads
a fresh, finite feed from `make_batches()` and returns "eval/loss", "eval/z_loss",
"eval/accuracy" and "eval/tokens" (the target tokens it weighed); a TreeDNN tree has one per
branch, prefixed "eval/BRANCH/"."""

from __future__ import annotations

from typing import Callable, Iterable

import jax

PREFIX = "eval/"


class EvalLoss:
    prefix = PREFIX

    def __init__(self, trainer, make_batches: Callable[[], Iterable[dict]],
                 prefix: str = PREFIX):
        self.trainer, self.make_batches, self.prefix = trainer, make_batches, prefix

    def run(self, step: int, params) -> dict[str, float]:
        totals = None
        for batch in self.make_batches():
            sums = jax.device_get(self.trainer.eval_step(params, batch))
            totals = sums if totals is None else {k: totals[k] + sums[k] for k in sums}
        if totals is None:
            raise ValueError("the eval feed yielded no batches")
        weight = max(float(totals["weight"]), 1.0)
        p = self.prefix
        return {f"{p}loss": float(totals["loss"]) / weight,
                f"{p}z_loss": float(totals["z_loss"]) / weight,
                f"{p}accuracy": float(totals["correct"]) / weight,
                f"{p}tokens": float(totals["weight"])}
