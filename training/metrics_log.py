"""Reading a run's metrics back: the one reader of what training/metrics_writer.py writes.

On a local disk a run appends to DIR/metrics.jsonl, and a resumed run first cuts the
records past its resume step. A bucket allows neither, so each start of a run writes its own
part, DIR/metrics/part-TIME-from-STEP.jsonl; reading the parts in the order they were
started, each part drops the earlier records past its STEP (the resumed run logs them
again). Lines that do not parse (a torn last line after a kill) are skipped.
"""

from __future__ import annotations

import json
import re

from fields import paths
from training.run_dir import RunDir

PART = re.compile(r"part-(\d+)-from-(\d+)\.jsonl$")


def part_name(started_ns: int, resume_step: int) -> str:
    return f"part-{started_ns:020d}-from-{resume_step}.jsonl"


def _lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            out.append(record)
    return out


def read_records(model_dir) -> list[dict]:
    """Every logged record of the run in model_dir, in order ([] if none was logged)."""
    run = RunDir.of(model_dir)
    records = []
    if paths.isfile(run.metrics):
        records = _lines(paths.read_text(run.metrics))
    for name in sorted(n for n in paths.listdir(run.metric_parts) if PART.match(n)):
        resumed_at = int(PART.match(name).group(2))
        records = [r for r in records if r["step"] <= resumed_at]
        records += _lines(paths.read_text(paths.join(run.metric_parts, name)))
    return records
