"""Metrics out: one JSON object per logged step in DIR/metrics.jsonl, and TensorBoard events.

Only the primary host (process 0) writes; on the others the writer is a no-op.
"""

from __future__ import annotations

import json
import os


class MetricsWriter:
    def __init__(self, model_dir: str, tensorboard: bool = True, primary: bool = True):
        self.primary = primary
        self._tb = None
        if not primary:
            return
        os.makedirs(model_dir, exist_ok=True)
        self.path = os.path.join(model_dir, "metrics.jsonl")
        self._jsonl = open(self.path, "a", buffering=1)
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(model_dir, "tensorboard"))

    def write(self, step: int, metrics: dict, prefix: str = "") -> None:
        if not self.primary:
            return
        record = {"step": int(step), **{prefix + k: float(v) for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if key != "step":
                    self._tb.add_scalar(key, value, int(step))

    def close(self) -> None:
        if not self.primary:
            return
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
