"""Training a TreeDNN tree on several datasets at once: one task per branch.

`BranchFeedConfig` names each branch's task and rate; `BranchFeed` yields global batches
each of one branch (tasks/feeding/branch_order.py), read from that branch's own feed, with a
`branch_index` row feature the train step selects the branch by. Its position (the batch
count and every branch feed's own position) is saved with checkpoints like a HostFeed's,
so a resumed run continues exactly; with task caches every branch resumes in constant time.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Callable

import numpy as np

from fields.integers import require_int
from tasks.feeding.branch_order import branch_at

BRANCH_INDEX = "branch_index"


def _did_you_mean(name: str, names) -> str:
    close = difflib.get_close_matches(str(name), list(names), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclasses.dataclass(frozen=True)
class BranchFeedConfig:
    """`tasks`: {branch: task or mixture}, every branch of the model's tree, each task in one
    branch; `rates`: {branch: rate} (None: equal rates), the share of batches of each
    branch; `seed`: of the branch order; `cache_dirs`: {branch: tools.cache_tasks dir} for
    the branches whose task is cached. The run's FeedConfig gives the rest (lengths, batch
    size, split, packing, shuffling seed) to every branch's feed."""

    tasks: dict
    rates: dict | None = None
    seed: int = 0
    cache_dirs: dict | None = None

    def __post_init__(self):
        if not isinstance(self.tasks, dict) or not self.tasks:
            raise ValueError(f"BranchFeedConfig.tasks={self.tasks!r} is invalid: expected a "
                             "non-empty {branch: task name} mapping")
        object.__setattr__(self, "tasks", dict(self.tasks))
        bad = {k: v for k, v in self.tasks.items()
               if not isinstance(k, str) or not isinstance(v, str) or not v}
        if bad:
            raise ValueError(f"BranchFeedConfig.tasks: {bad} is invalid: expected branch names "
                             "mapped to task names")
        by_task: dict = {}
        for branch, task in self.tasks.items():
            by_task.setdefault(task, []).append(branch)
        shared = {t: b for t, b in by_task.items() if len(b) > 1}
        if shared:
            raise ValueError(f"BranchFeedConfig.tasks puts task(s) in several branches {shared}: "
                             "each branch trains on its own dataset")
        require_int("BranchFeedConfig", "seed", self.seed)
        rates = dict(self.rates) if self.rates is not None else {b: 1.0 for b in self.tasks}
        self._check_keys("rates", rates)
        for branch, rate in rates.items():
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) \
                    or not math.isfinite(rate) or rate <= 0:
                raise ValueError(f"BranchFeedConfig.rates[{branch!r}]={rate!r} is invalid: "
                                 "expected a finite number > 0")
            if branch not in self.tasks:
                raise ValueError(f"BranchFeedConfig.rates names branch {branch!r}, which has no "
                                 f"task{_did_you_mean(branch, self.tasks)}")
        missing = [b for b in self.tasks if b not in rates]
        if missing:
            raise ValueError(f"BranchFeedConfig.rates gives no rate for branch(es) {missing}")
        object.__setattr__(self, "rates", {b: float(rates[b]) for b in self.tasks})
        dirs = dict(self.cache_dirs or {})
        self._check_keys("cache_dirs", dirs)
        for branch in dirs:
            if branch not in self.tasks:
                raise ValueError(f"BranchFeedConfig.cache_dirs names branch {branch!r}, which "
                                 f"has no task{_did_you_mean(branch, self.tasks)}")
        object.__setattr__(self, "cache_dirs", dirs or None)

    def _check_keys(self, field: str, mapping) -> None:
        if not isinstance(mapping, dict):
            raise ValueError(f"BranchFeedConfig.{field}={mapping!r} is invalid: expected a "
                             "{branch: value} mapping")

    def check_branches(self, branches: tuple[str, ...]) -> None:
        """Refuse a branch of the model with no task, or a task for a branch it lacks."""
        for branch in self.tasks:
            if branch not in branches:
                raise ValueError(f"BranchFeedConfig.tasks names branch {branch!r}, which the "
                                 f"model's tree lacks (its branches: {list(branches)})"
                                 + _did_you_mean(branch, branches))
        for branch in branches:
            if branch not in self.tasks:
                raise ValueError(f"branch {branch!r} of the model's tree has no task: add it to "
                                 f"BranchFeedConfig.tasks (now {self.tasks})")

    def feed_of(self, feed, branch: str):
        """The FeedConfig of `branch`: `feed` with the branch's task (and cache)."""
        cache = (self.cache_dirs or {}).get(branch)
        return dataclasses.replace(feed, mixture_or_task_name=self.tasks[branch],
                                   cache_dir=cache)

    def order_state(self, branches: tuple[str, ...]) -> dict:
        """What fixes the branch order: saved with the position, compared on restore."""
        return {"branches": list(branches), "rates": [self.rates[b] for b in branches],
                "seed": self.seed, "tasks": [self.tasks[b] for b in branches]}


class BranchFeed:
    """Iterator of this host's rows of each global batch, each batch of one branch.

    `make_feed(branch, saved_state_or_None)` opens a branch's feed (a HostFeed: an iterator
    of batches with `.state()`), at its saved position when given."""

    def __init__(self, config: BranchFeedConfig, branches: tuple[str, ...],
                 make_feed: Callable[[str, dict | None], object], state: dict | None = None):
        config.check_branches(branches)
        self.config, self.branches = config, tuple(branches)
        self.rates = tuple(config.rates[b] for b in self.branches)
        if state is not None:
            check_state(config, self.branches, state)
        saved = state["feeds"] if state is not None else {}
        self.position = state["position"] if state is not None else 0
        self.feeds = {b: make_feed(b, saved.get(b)) for b in self.branches}

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        index = branch_at(self.position, self.rates, self.config.seed)
        batch = dict(next(self.feeds[self.branches[index]]))
        rows = next(iter(batch.values())).shape[0]
        batch[BRANCH_INDEX] = np.full((rows,), index, np.int32)
        self.position += 1
        return batch

    def state(self) -> dict:
        """JSON-serialisable position: the batch count, the order, and each branch feed's."""
        return {"position": self.position, **self.config.order_state(self.branches),
                "feeds": {b: feed.state() for b, feed in self.feeds.items()}}


def check_state(config: BranchFeedConfig, branches: tuple[str, ...], state: dict) -> None:
    """Refuse a saved position whose branch order this run would not replay."""
    if "feeds" not in state:
        raise ValueError("the saved input position is a single feed's, but this run trains a "
                         "tree on one task per branch: start a new model_dir")
    now = config.order_state(branches)
    for key, value in now.items():
        if state.get(key) != value:
            raise ValueError(f"the saved input position was for branch {key}={state.get(key)!r}, "
                             f"but this run has {value!r}: resuming would not replay the same "
                             "batches. Restore the original value or start a new model_dir.")
