"""Choice fields of config dataclasses: a value outside its fixed set (`dispatch='gather'`,
`resume='roughly'`) is refused naming the field, the value, every valid choice and, where a
choice is close to what was typed, that one (did you mean)."""

from __future__ import annotations

import difflib
from collections.abc import Collection


def require_choice(owner: str, name: str, value, valid: Collection, meaning: str = "") -> None:
    """Raise ValueError unless `value in valid` (a tuple keeps its order in the message, a
    set or a dict's keys are sorted). `owner` "" names the field alone (a flag, "--to");
    `meaning` (e.g. "T5's RMSNorm, or KL-Norm") is appended to the message."""
    try:
        if value in valid:
            return
    except TypeError:  # an unhashable value is in no set
        pass
    choices = tuple(valid) if isinstance(valid, (tuple, list)) else tuple(sorted(valid, key=str))
    note = f" ({meaning})" if meaning else ""
    close = difflib.get_close_matches(value, [str(c) for c in choices], n=1, cutoff=0.6) \
        if isinstance(value, str) else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    field = f"{owner}.{name}" if owner else name
    raise ValueError(f"{field}={value!r} is invalid: expected one of {choices}{note}{hint}")
