"""Rows every host holds in full, as one batch-sharded global array, and back.

Inference on a multi-host mesh: every process calls the Predictor with the SAME global rows
(as seqio's Evaluator does on each host with its cached dataset). The rows are padded to a
multiple of the data-parallel degree, and each process places only the slices its own
devices hold (`jax.make_array_from_callback`), so nothing crosses hosts on the way in and
any mesh order works (a host's rows need not be one contiguous block).

On the way out the jitted step's outputs are replicated by its `out_shardings`: one
all-gather inside the compiled program (the results are small: ids and scores), after
which every process reads the whole result from its own devices with `np.asarray`; no
second program or host round trip as with `multihost_utils.process_allgather`.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec


def padded(rows: np.ndarray, multiple: int) -> np.ndarray:
    """`rows` with all-zero rows appended up to a multiple of `multiple` (at least one)."""
    batch = max(1, -(-rows.shape[0] // multiple)) * multiple
    return np.pad(rows, ((0, batch - rows.shape[0]),) + ((0, 0),) * (rows.ndim - 1))


def global_rows(rows: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """The global array of `rows` (the same on every process), laid out by `sharding`;
    each process copies in only the slices its devices hold."""
    rows = np.asarray(rows)
    return jax.make_array_from_callback(rows.shape, sharding, lambda index: rows[index])


def replicated(mesh) -> NamedSharding:
    """Every device holds the whole array: what outputs are gathered to."""
    return NamedSharding(mesh, PartitionSpec())
