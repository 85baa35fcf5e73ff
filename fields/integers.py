"""Integer fields of config dataclasses: a float (`TRAIN_STEPS=10.5`), a string
(`BATCH_SIZE='8'`), a bool or a value out of range is refused naming the field, the value
and what would be valid, before anything is built from it."""

from __future__ import annotations

import numbers


def require_int(owner: str, name: str, value, minimum: int | None = None,
                maximum: int | None = None, meaning: str = "") -> None:
    """Raise ValueError unless `value` is an integer in [minimum, maximum] (None: unbounded).

    `meaning` (e.g. "tokens per routing group") is appended to the message.
    """
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok and ((minimum is not None and value < minimum)
               or (maximum is not None and value > maximum)):
        ok = False
    if ok:
        return
    if minimum is not None and maximum is not None:
        expected = f"an integer in [{minimum}, {maximum}]"
    elif minimum is not None:
        expected = f"an integer >= {minimum}"
    elif maximum is not None:
        expected = f"an integer <= {maximum}"
    else:
        expected = "an integer"
    got = "" if isinstance(value, numbers.Integral) and not isinstance(value, bool) else (
        f", got {type(value).__name__}")
    note = f" ({meaning})" if meaning else ""
    raise ValueError(f"{owner}.{name}={value!r} is invalid: expected {expected}{note}{got}")
