"""How an MoE layer cuts a batch into routing groups, and each expert's capacity per group.

With a `max_group_size`, flaxformer's MoeLayer rule: pad the batch (rows or positions,
whichever adds fewer tokens) until its tokens divide by a multiple M (num_experts x expert
replicas there; t5pod also folds in the batch's shard count), then take the smallest group
count G >= max(tokens // max_group_size, M) that divides the tokens and is a multiple of M.
Note the floor: G may make groups a little larger than max_group_size (10 tokens, size 4:
2 groups of 5), as in flaxformer. Capacity: round(factor x tokens_per_group / experts) with
Python's round (half to even), at least a minimum. Without a max_group_size a sequence is
a group (HF SwitchTransformers) and the capacity is ceil(factor x S / E).
"""

from __future__ import annotations

import math


def batch_padding(rows: int, length: int, multiple_of: int) -> tuple[int, int]:
    """(extra rows, extra positions) making rows x length a multiple of `multiple_of`: the
    fewest rows, or the fewest positions when that adds no more tokens (never both)."""
    tokens = rows * length
    if tokens % multiple_of == 0:
        return 0, 0
    extra_rows = next(r for r in range(1, multiple_of + 1)
                      if (tokens + r * length) % multiple_of == 0)
    extra_positions = next(p for p in range(1, multiple_of + 1)
                           if (tokens + p * rows) % multiple_of == 0)
    if extra_positions * rows > extra_rows * length:
        return extra_rows, 0
    return 0, extra_positions


def num_groups(tokens: int, max_group_size: int, multiple_of: int = 1,
               strict: bool = False) -> int:
    """The smallest G >= max(tokens // max_group_size, multiple_of) dividing `tokens` and a
    multiple of `multiple_of`; with `strict`, refused unless tokens / G == max_group_size."""
    g = max(tokens // max_group_size, multiple_of)
    while g < tokens and (tokens % g or g % multiple_of):
        g += 1
    if tokens % g or g % multiple_of:
        raise ValueError(f"{tokens} tokens do not split into groups that are a multiple of "
                         f"{multiple_of} (experts x expert replicas, and the batch shards); "
                         "pad the batch to a multiple of it")
    if strict and tokens // g != max_group_size:
        raise ValueError(f"MoEConfig.strict_group_size=True refuses this batch: its {tokens} "
                         f"tokens make {g} groups of {tokens // g}, not group_size="
                         f"{max_group_size} (groups must be a multiple of {multiple_of}); "
                         "change the batch or group_size, or set strict_group_size=False")
    return g


def capacity(tokens_per_group: int, num_experts: int, factor: float, minimum: int,
             fixed: int | None = None, rounding: str = "round") -> int:
    """Slots per expert per group: `rounding` ("round": flaxformer's, "ceil") of factor x S /
    E, at least `minimum`, at most S (no expert can get more tokens than a group holds, so
    the cap changes no routing). `fixed` (HF SwitchTransformers' `expert_capacity`) replaces
    the formula."""
    if factor <= 0:
        raise ValueError(f"capacity factor={factor!r} is invalid: expected a float > 0")
    share = factor * tokens_per_group / num_experts
    c = fixed if fixed is not None else max(
        minimum, int(round(share)) if rounding == "round" else math.ceil(share))
    return max(1, min(c, tokens_per_group))
