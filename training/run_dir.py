"""A model_dir's layout, named once: what a run writes where.

    DIR/checkpoints/STEP/     orbax steps (training/checkpoints/)
    DIR/model.json            the model, task and lengths (training/checkpoints/model_json.py)
    DIR/config.gin, DIR/operative_config.gin   the run's gin, as given and as read
    DIR/metrics.jsonl         metrics on a local disk, appended to
    DIR/metrics/part-*.jsonl  metrics on a bucket, one part per start of the run
    DIR/tensorboard/          TensorBoard events
    DIR/t5pod.lock            the one writer's lock (training/checkpoints/lock.py)

`RunDir(path, flag)` checks the path through the one path layer (fields/paths.py): local,
gs:// or s3://, anything else refused before a file is written.
"""

from __future__ import annotations

import dataclasses

from fields import paths

CHECKPOINTS, MODEL_JSON, METRICS, METRIC_PARTS = ("checkpoints", "model.json", "metrics.jsonl",
                                                  "metrics")
TENSORBOARD, LOCK = "tensorboard", "t5pod.lock"


@dataclasses.dataclass(frozen=True)
class RunDir:
    path: str

    @classmethod
    def of(cls, value, flag: str = "--model_dir") -> "RunDir":
        return value if isinstance(value, RunDir) else cls(paths.user_path(value, flag))

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return self.path

    @property
    def on_bucket(self) -> bool:
        return paths.is_bucket(self.path)

    def file(self, name: str) -> str:
        return paths.join(self.path, name)

    @property
    def checkpoints(self) -> str:
        return self.file(CHECKPOINTS)

    @property
    def model_json(self) -> str:
        return self.file(MODEL_JSON)

    @property
    def metrics(self) -> str:
        """The local metrics.jsonl (appended to); buckets take parts under metric_parts."""
        return self.file(METRICS)

    @property
    def metric_parts(self) -> str:
        return self.file(METRIC_PARTS)

    @property
    def tensorboard(self) -> str:
        return self.file(TENSORBOARD)

    @property
    def lock(self) -> str:
        return self.file(LOCK)
