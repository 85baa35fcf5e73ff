"""Integer fields of training's config dataclasses: a float (`TRAIN_STEPS=10.5`), a string
(`BATCH_SIZE='8'`) or a bool is refused naming the field and the value, before any range
check compares it."""

from __future__ import annotations

import numbers


def require_int(owner: str, name: str, value) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ValueError(f"{owner}.{name}={value!r} is invalid: expected an integer, got "
                         f"{type(value).__name__}")
