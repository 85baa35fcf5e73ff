"""What a run feeds: a task or mixture, its lengths, batch size, shuffling and resume rule."""

from __future__ import annotations

import dataclasses

from fields import paths
from fields.choices import require_choice
from fields.integers import require_int
from tasks.settings import TaskSettings, from_mapping


RESUME_MODES = ("exact", "approximate")
# what "approximate" resumes across; any other change makes a saved position meaningless
# (and the source: the live pipeline or a cache, or another cache of the same task)
RESCALABLE = ("process_count", "batch_size", "cache")


@dataclasses.dataclass(frozen=True)
class FeedConfig:
    mixture_or_task_name: str
    task_feature_lengths: dict
    batch_size: int                 # global, across all hosts
    split: str = "train"
    shuffle: bool = True
    seed: int = 0
    pack: bool = True
    num_epochs: int | None = None   # None: repeat forever (training)
    tfds_data_dir: str | None = None
    # "exact": refuse a saved position that this run cannot replay. "approximate": a position
    # saved under another host count or batch size resumes at the same number of global
    # examples on this run's shards (some examples may repeat or be skipped).
    resume: str = "exact"
    # what the task code reads (benchmark dirs, corpus files, formats, mixing, sizes): a
    # TaskSettings, or a mapping {setting: {parameter: value}} read by tasks.settings
    task_settings: TaskSettings = TaskSettings()
    # a directory written by tools.cache_tasks for this task, split, lengths and packing:
    # read instead of the live pipeline (constant-time exact resume)
    cache_dir: str | None = None
    # threads preprocessing (live: tf.data's thread pool; cache: Grain's reader threads);
    # None: tf.data's default (every core) and 4 Grain threads
    read_threads: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "task_settings", from_mapping(self.task_settings))
        require_int("FeedConfig", "batch_size", self.batch_size, 1)
        require_int("FeedConfig", "seed", self.seed)
        if self.num_epochs is not None:
            require_int("FeedConfig", "num_epochs", self.num_epochs, meaning="or None: repeat")
        if self.read_threads is not None:
            require_int("FeedConfig", "read_threads", self.read_threads, 1,
                        meaning="preprocessing threads; None: the default")
        if self.cache_dir is not None:
            if not isinstance(self.cache_dir, str) or not self.cache_dir:
                raise ValueError(f"FeedConfig.cache_dir={self.cache_dir!r} must be a directory "
                                 "path or None")
            cache_dir = paths.user_path(self.cache_dir, "FeedConfig.cache_dir")
            if paths.scheme(cache_dir) == "s3":
                raise ValueError(f"FeedConfig.cache_dir={cache_dir}: Grain's ArrayRecord "
                                 "reader reads local paths and gs:// only; copy the cache to "
                                 "a local disk or gs:// (tools.cache_tasks writes s3:// too)")
            object.__setattr__(self, "cache_dir", cache_dir)
        require_choice("FeedConfig", "resume", self.resume, RESUME_MODES)
        bad = {k: v for k, v in self.task_feature_lengths.items()
               if not isinstance(v, int) or v < 1}
        keys = set(self.task_feature_lengths)
        if bad or keys not in ({"inputs", "targets"}, {"inputs", "byte_inputs", "targets"}):
            raise ValueError(f"FeedConfig.task_feature_lengths={self.task_feature_lengths} must "
                             "give positive int lengths for exactly 'inputs' and 'targets' "
                             "(and 'byte_inputs' for a hybrid task)")
