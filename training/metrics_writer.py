"""Metrics out: one JSON object per logged step in DIR/metrics.jsonl, and TensorBoard events.

Only the primary host (process 0) writes; on the others the writer is a no-op. A resumed
run passes `resume_step`: records past it (written before a kill or preemption, and about
to be replayed) are dropped from metrics.jsonl and purged from TensorBoard, so each step is
logged once.
"""

from __future__ import annotations

import json
import os
import sys


class MetricsWriter:
    def __init__(self, model_dir: str, tensorboard: bool = True, primary: bool = True,
                 resume_step: int | None = None):
        self.primary = primary
        self._tb = None
        if not primary:
            return
        os.makedirs(model_dir, exist_ok=True)
        self.path = os.path.join(model_dir, "metrics.jsonl")
        if resume_step is not None:
            _drop_after(self.path, resume_step)
        self._jsonl = open(self.path, "a", buffering=1)
        if tensorboard:
            from tensorboardX import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(os.path.join(model_dir, "tensorboard"), purge_step=purge)

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
        """Close both files; a failing flush (a full disk) is reported, not raised, so it never
        hides the error that is ending the run."""
        if not self.primary:
            return
        for f in (self._jsonl, self._tb):
            try:
                if f is not None:
                    f.close()
            except OSError as e:
                print(f"could not flush the metrics in {os.path.dirname(self.path)}: {e}",
                      file=sys.stderr)


def _drop_after(path: str, step: int) -> None:
    """Rewrite `path` keeping the records of steps <= step (a torn last line goes too)."""
    if not os.path.exists(path):
        return
    kept, dropped = [], 0
    with open(path) as f:
        for line in f:
            try:
                keep = int(json.loads(line)["step"]) <= step
            except (ValueError, KeyError, TypeError):
                keep = False
            if keep:
                kept.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if dropped:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, path)
