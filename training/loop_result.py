"""What a run of the train loop ends with: one value for all of its exits."""

from __future__ import annotations

import dataclasses
from typing import Any

from fields.choices import require_choice

STOPS = ("done", "preempted", "already_done")


@dataclasses.dataclass(frozen=True)
class LoopResult:
    """`stopped`: "done" (trained to TRAIN_STEPS), "preempted" (SIGTERM saved the state, or
    came before the first step) or "already_done" (model_dir already held TRAIN_STEPS: only
    missing final evals ran). `metrics`: the last logged train metrics; `eval_metrics`: the
    last evaluators' metrics; `state`: the final train state (None when nothing trained)."""

    model_dir: str
    step: int
    stopped: str
    resumed: bool = False
    metrics: dict = dataclasses.field(default_factory=dict)
    eval_metrics: dict = dataclasses.field(default_factory=dict)
    state: Any = None

    def __post_init__(self):
        require_choice("LoopResult", "stopped", self.stopped, STOPS)

    @property
    def preempted(self) -> bool:
        return self.stopped == "preempted"

    def as_json(self) -> dict:
        """The run's JSON-able summary (the train CLI's last line): model_dir, step,
        preempted, resumed, the last loss and accuracy, and the eval metrics."""
        train = {k: v for k, v in self.metrics.items() if k in ("loss", "accuracy")}
        return {"model_dir": self.model_dir, "step": self.step, "preempted": self.preempted,
                "resumed": self.resumed, **train, **self.eval_metrics}
