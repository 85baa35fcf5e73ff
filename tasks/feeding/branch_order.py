"""Which branch of a TreeDNN tree each global batch trains: a seeded order by rates.

Batch k belongs to branch `branch_at(k, rates, seed)`, drawn from the rates by a generator
seeded with (seed, k) alone, so the order is the same on every host and a resumed run
finds batch k's branch without replaying the first k draws.
"""

from __future__ import annotations

import numpy as np


def branch_at(position: int, rates: tuple[float, ...], seed: int) -> int:
    """The index of the branch of global batch `position` (0-based), drawn by `rates`."""
    bounds = np.cumsum(np.asarray(rates, np.float64))
    u = np.random.default_rng([int(seed), int(position)]).random() * bounds[-1]
    return int(min(np.searchsorted(bounds, u, side="right"), len(rates) - 1))
