"""Metrics for text-to-text tasks, in seqio's (targets, predictions) -> dict form."""

from __future__ import annotations

from typing import Sequence


def accuracy(targets: Sequence, predictions: Sequence) -> dict[str, float]:
    """Percentage of predictions exactly equal to their target."""
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
    hits = sum(t == p for t, p in zip(targets, predictions, strict=True))
    return {"accuracy": 100.0 * hits / max(len(targets), 1)}


def exact_match(targets: Sequence, predictions: Sequence) -> dict[str, float]:
    """Percentage of (postprocessed) predictions equal to their target: BBH's metric."""
    return {"exact_match": accuracy(targets, predictions)["accuracy"]}
