"""Instruction mixtures: examples-proportional rates with a per-task cap, in weighted groups.

Within a sub-mixture each task's rate is proportional to min(its train examples, cap), so a
huge task cannot drown the small ones (T5's examples-proportional mixing); the sub-mixtures
then share the whole in proportion to their weights, as Flan mixes its collections:

    rate(task in group g) = weight(g) / sum(weights) * min(n_task, cap) / sum_g min(n, cap)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import seqio

from tasks import settings_scope


@dataclasses.dataclass(frozen=True)
class SubMixture:
    tasks: tuple[str, ...]
    weight: float = 1.0

    def __post_init__(self):
        if not self.tasks:
            raise ValueError("a sub-mixture needs at least one task")
        if not self.weight > 0:
            raise ValueError(f"sub-mixture weight {self.weight} must be > 0 (tasks {self.tasks})")


def mixture_rates(groups: Mapping[str, SubMixture], sizes: Mapping[str, int],
                  cap: int) -> dict[str, float]:
    """{task: rate}, summing to 1, from group weights and capped example counts."""
    if cap < 1:
        raise ValueError(f"per-task example cap {cap} must be >= 1")
    seen: dict[str, str] = {}
    for name, group in groups.items():
        for task in group.tasks:
            if task in seen:
                raise ValueError(f"task {task!r} is in sub-mixtures {seen[task]!r} and {name!r}")
            seen[task] = name
            if sizes.get(task, 0) < 1:
                raise ValueError(f"task {task!r} has no train examples (size "
                                 f"{sizes.get(task)}); it cannot be mixed")
    total_weight = sum(g.weight for g in groups.values())
    rates = {}
    for group in groups.values():
        capped = {t: min(int(sizes[t]), cap) for t in group.tasks}
        denominator = sum(capped.values())
        for task, n in capped.items():
            rates[task] = group.weight / total_weight * n / denominator
    return rates


@dataclasses.dataclass(frozen=True)
class Mixing:
    weights: tuple[tuple[str, float], ...] = ()    # (sub-mixture, weight) overrides
    cap: int | None = None                         # overrides every mixture's per-task cap


def instruction_mixing(weights: Mapping[str, float] | None = None,
                       cap: int | None = None) -> Mixing:
    """Gin (and sweep) overrides of sub-mixture weights and the per-task cap:

        tasks.instruction_mixing.weights = {'spelling': 2.0}
        tasks.instruction_mixing.cap = 1000
    """
    return Mixing(tuple(sorted((weights or {}).items())), cap)


_GROUPS: dict[str, str] = {}   # sub-mixture name -> the mixture it belongs to


def add_mixture(name: str, groups: Mapping[str, SubMixture], cap: int,
                size_of: Callable[[str], int]) -> None:
    """Register mixture `name` with seqio; rates are computed (sizes counted, gin overrides
    applied) each time the mixture is read."""
    for group in groups:
        if group in _GROUPS and _GROUPS[group] != name:
            raise ValueError(f"sub-mixture name {group!r} is used by {_GROUPS[group]!r} already")
        _GROUPS[group] = name
    tasks = [t for g in groups.values() for t in g.tasks]

    def rate(task) -> float:
        return current_rates(groups, cap, size_of)[task.name]

    seqio.MixtureRegistry.add(name, [(t, rate) for t in tasks])


def current_rates(groups: Mapping[str, SubMixture], cap: int,
                  size_of: Callable[[str], int]) -> dict[str, float]:
    mixing = settings_scope.get("instruction_mixing", Mixing)
    unknown = sorted(g for g, _ in mixing.weights if g not in _GROUPS)
    if unknown:
        raise ValueError(f"tasks.instruction_mixing.weights names unknown sub-mixture(s) "
                         f"{unknown}; known: {sorted(_GROUPS)}")
    weights = dict(mixing.weights)
    groups = {g: dataclasses.replace(m, weight=weights.get(g, m.weight))
              for g, m in groups.items()}
    tasks = [t for g in groups.values() for t in g.tasks]
    return mixture_rates(groups, {t: size_of(t) for t in tasks},
                         mixing.cap if mixing.cap is not None else cap)
