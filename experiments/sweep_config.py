"""A sweep: a base gin run plus a grid (or a list) of gin bindings, one training per member.

A sweep file is gin that configures `sweep.SweepConfig`:

    sweep.SweepConfig.gin_files = ['runs/flan_cpu_tiny.gin']
    sweep.SweepConfig.bindings = {'TRAIN_STEPS': 300}              # every member
    sweep.SweepConfig.grid = {'training.ScheduleConfig.learning_rate': [3e-4, 1e-3, 3e-3]}
    # or, instead of grid, an explicit list:
    # sweep.SweepConfig.members = [{'BATCH_SIZE': 8}, {'BATCH_SIZE': 16, 'TRAIN_STEPS': 150}]
    sweep.SweepConfig.heldout_examples = 64

Keys are gin names (`configurable.parameter`) or macros of the base run (`BATCH_SIZE`);
values are Python literals.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import re

import gin

MAX_NAME = 80   # characters of a member's directory name


@dataclasses.dataclass(frozen=True)
class Member:
    name: str
    bindings: tuple[tuple[str, object], ...]     # the swept values of this member

    def gin_bindings(self, fixed: dict) -> list[str]:
        return [f"{k} = {v!r}" for k, v in {**fixed, **dict(self.bindings)}.items()]


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    gin_files: tuple[str, ...] = ()
    bindings: dict = dataclasses.field(default_factory=dict)
    grid: dict = dataclasses.field(default_factory=dict)
    members: tuple = ()
    heldout_examples: int = 64     # decoded zero-shot examples per held-out task (0: none)

    def __post_init__(self):
        object.__setattr__(self, "gin_files", tuple(self.gin_files))
        object.__setattr__(self, "members", tuple(dict(m) for m in self.members))
        if not self.gin_files:
            raise ValueError("sweep.SweepConfig.gin_files is empty: name the base run's gin "
                             "files (e.g. ['runs/instruction_tune.gin'])")
        if bool(self.grid) == bool(self.members):
            raise ValueError("give exactly one of sweep.SweepConfig.grid (values to cross) and "
                             "sweep.SweepConfig.members (a list of binding dicts)")
        for key, values in self.grid.items():
            if not isinstance(values, (list, tuple)) or not values:
                raise ValueError(f"sweep grid entry {key!r} must be a non-empty list of values; "
                                 f"got {values!r}")
        if self.heldout_examples < 0:
            raise ValueError(f"sweep.SweepConfig.heldout_examples={self.heldout_examples} "
                             "must be >= 0")

    def swept_keys(self) -> list[str]:
        if self.grid:
            return list(self.grid)
        return list(dict.fromkeys(k for m in self.members for k in m))

    def expand(self) -> list[Member]:
        if self.grid:
            keys = list(self.grid)
            combos = [dict(zip(keys, values, strict=True))
                      for values in itertools.product(*self.grid.values())]
        else:
            combos = list(self.members)
        members = [Member(member_name(c), tuple(c.items())) for c in combos]
        names = [m.name for m in members]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sweep members repeat the same bindings: {dupes}")
        return members


_configurable = gin.external_configurable(SweepConfig, module="sweep")


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return "+".join(f"{k}{_short(v)}" for k, v in value.items())
    return str(value)


def member_name(bindings: dict) -> str:
    """A directory name from the bindings: `learning_rate=0.001,BATCH_SIZE=8`."""
    shorts = [k.rsplit(".", 1)[-1] for k in bindings]
    keys = [s if shorts.count(s) == 1 else k for s, k in zip(shorts, bindings, strict=True)]
    text = ",".join(f"{k}={_short(v)}" for k, v in zip(keys, bindings.values(), strict=True))
    name = re.sub(r"[^A-Za-z0-9=.,+_-]", "_", text) or "base"
    if len(name) > MAX_NAME:  # long values (paths): a readable head and a stable hash
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        name = f"{name[:MAX_NAME - 9]}-{digest}"
    return name


def read(path: str) -> SweepConfig:
    """Parse a sweep file (gin) into its SweepConfig; leaves gin cleared."""
    from runner import gin_flags

    gin.clear_config()
    gin_flags.add_search_paths()
    try:
        gin.parse_config_file(gin_flags.resolve_gin_file(path))
        return _configurable()
    finally:
        gin.clear_config()
