"""The scalar metrics of a metric function's result: seqio metric_fns may also return
text, lists or plots, which a metrics writer cannot log."""

from __future__ import annotations


def scalars(metrics: dict) -> dict[str, float]:
    """{name: float(value)} of the values that are numbers; the others left out."""
    out = {}
    for name, value in metrics.items():
        try:
            out[name] = float(value)
        except (TypeError, ValueError):
            continue
    return out
