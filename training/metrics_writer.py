"""Metrics out: one JSON object per logged step, and TensorBoard events.

Only the primary host (process 0) writes; on the others the writer is a no-op. A resumed
run passes `resume_step`: records past it (written before a kill or preemption, and about
to be replayed) are dropped and purged from TensorBoard, so each step is logged once
(training/metrics_log.py reads them back). On a local disk records are appended to
DIR/metrics.jsonl. A bucket has no append: the records and events go to local files and a
background thread uploads them whole after each logged step (the step loop never waits
for the bucket), into one part per start of the run (DIR/metrics/part-*.jsonl) and
DIR/tensorboard/.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time

from fields import paths
from training.metrics_log import part_name
from training.run_dir import RunDir

logger = logging.getLogger(__name__)


class MetricsWriter:
    def __init__(self, model_dir, tensorboard: bool = True, primary: bool = True,
                 resume_step: int | None = None):
        self.primary = primary
        self._tb = self._uploader = None
        if not primary:
            return
        run = RunDir.of(model_dir)
        self.where = run.path
        if run.on_bucket:
            self._staging = tempfile.mkdtemp(prefix="t5pod_metrics_")
            name = part_name(time.time_ns(), resume_step or 0)
            self.path = os.path.join(self._staging, name)
            tb_dir = os.path.join(self._staging, "tensorboard")
            self._uploader = _Uploader({self.path: paths.join(run.metric_parts, name)},
                                       tb_dir, run.tensorboard)
        else:
            paths.makedirs(run.path)
            self.path, tb_dir = run.metrics, run.tensorboard
            if resume_step is not None:
                _drop_after(self.path, resume_step)
        self._jsonl = open(self.path, "a", buffering=1)
        if tensorboard:
            from tensorboardX import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(tb_dir, purge_step=purge)

    def write(self, step: int, metrics: dict, prefix: str = "") -> None:
        if not self.primary:
            return
        record = {"step": int(step), **{prefix + k: float(v) for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if key != "step":
                    self._tb.add_scalar(key, value, int(step))
        if self._uploader is not None:
            if self._tb is not None:
                self._tb.flush()
            self._uploader.due()

    def close(self) -> None:
        """Close both files (and upload them a last time); a failing flush (a full disk) is
        reported, not raised, so it never hides the error that is ending the run."""
        if not self.primary:
            return
        for f in (self._jsonl, self._tb):
            try:
                if f is not None:
                    f.close()
            except OSError as e:
                logger.warning(f"could not flush the metrics of {self.where}: {e}")
        if self._uploader is not None:
            self._uploader.close()
            shutil.rmtree(self._staging, ignore_errors=True)


class _Uploader:
    """Uploads the changed local files to their bucket objects on a background thread."""

    def __init__(self, files: dict[str, str], tb_local: str, tb_remote: str):
        self.files, self.tb_local, self.tb_remote = files, tb_local, tb_remote
        self._sent: dict[str, tuple] = {}
        self._due, self._stop = threading.Event(), False
        self._warned = False
        self._thread = threading.Thread(target=self._loop, daemon=True, name="t5pod-metrics")
        self._thread.start()

    def due(self) -> None:
        self._due.set()

    def close(self) -> None:
        self._stop = True
        self._due.set()
        self._thread.join()
        self._upload()

    def _loop(self) -> None:
        while not self._stop:
            self._due.wait()
            self._due.clear()
            if not self._stop:
                self._upload()

    def _targets(self) -> dict[str, str]:
        out = dict(self.files)
        if os.path.isdir(self.tb_local):
            for name in os.listdir(self.tb_local):
                out[os.path.join(self.tb_local, name)] = paths.join(self.tb_remote, name)
        return out

    def _upload(self) -> None:
        for local, remote in self._targets().items():
            try:
                stat = os.stat(local)
                seen = (stat.st_size, stat.st_mtime_ns)
                if self._sent.get(local) != seen:
                    paths.upload(local, remote)
                    self._sent[local] = seen
            except Exception as e:  # noqa: BLE001 - logged, the run goes on
                if not self._warned:
                    self._warned = True
                    logger.warning(f"could not upload the metrics to {remote}: "
                                   f"{type(e).__name__}: {e} (retried at the next log step)")


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
        paths.write_text(path, "".join(kept))
