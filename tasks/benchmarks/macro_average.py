"""Benchmark mixtures reported as the unweighted mean of their tasks' scores.

seqio reports each task of a mixture on its own. BBH's published number (Suzgun et al.,
Flan-T5's "BBH direct" and "BBH CoT") is the mean over its 27 tasks, each counting once
whatever its size; a mixture registered here gets that mean as its own row.
"""

from __future__ import annotations

import seqio

_METRICS: dict[str, str] = {}   # mixture name -> the metric averaged


def register(mixture: str, metric: str) -> None:
    _METRICS[mixture] = metric


def with_average(name: str, results: dict[str, dict]) -> dict[str, dict]:
    """`results` ({task: {metric: value}}) plus {name: {metric: mean over its tasks}} when
    `name` is a registered mixture; a task of it without the metric is an error."""
    metric = _METRICS.get(name)
    if metric is None:
        return results
    tasks = [t.name for t in seqio.get_mixture_or_task(name).tasks]
    missing = [t for t in tasks if metric not in results.get(t, {})]
    if missing:
        raise ValueError(f"mixture {name!r}: no {metric!r} for {missing} to average")
    mean = sum(float(results[t][metric]) for t in tasks) / len(tasks)
    return {**results, name: {metric: mean}}
