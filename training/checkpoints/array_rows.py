"""Read one row of arrays an orbax checkpoint holds, and nothing of its other rows.

Orbax's public restore reads whole arrays (or the first rows, by truncation). A TreeDNN
tree's per-branch arrays lead with the `branch` axis and t5pod stores them one chunk per
branch (`Checkpointer(per_branch=...)`: orbax's `SaveArgs(shard_axes=(0,))`), so row `b` of
such an array is one chunk of its own. `read_rows` opens each array through orbax's public
tensorstore read spec (`ocp.type_handlers.get_json_tspec_read`, the spec orbax's own restore
opens) and reads row `b`: tensorstore fetches the chunks that row lies in and no others.
An array stored in one chunk (a checkpoint written before t5pod chunked branches) reads
correctly too, but then the whole array is read; `RowsRead.row_chunked` says which it was.

`bytes_read` is tensorstore's own count of the bytes its storage drivers (local files,
gs://, s3://, http) read in this process, to measure what a restore read.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from etils import epath

from fields import paths
from training.checkpoints.verify import read_json

_BYTES_READ = re.compile(r"^/tensorstore/kvstore/[a-z_]+/bytes_read$")


def bytes_read() -> int:
    """Bytes tensorstore's storage drivers have read in this process so far."""
    total = 0
    for metric in ts.experimental_collect_matching_metrics("/tensorstore/kvstore/"):
        if _BYTES_READ.match(metric["name"]):
            total += sum(int(v.get("value", 0)) for v in metric.get("values", []))
    return total


@dataclasses.dataclass(frozen=True)
class RowsRead:
    """Rows read from a checkpoint: {name: array [1, ...]} and whether every array was
    stored one chunk per row (so no other row's bytes were read)."""

    arrays: dict
    row_chunked: bool


def array_name(path: tuple) -> str:
    """The name orbax stores a pytree leaf under: its keys joined by dots."""
    return ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def _uses_zarr3(item_dir: str) -> bool:
    meta = read_json(paths.join(item_dir, "_METADATA"))
    if not meta.get("use_ocdbt", True):
        raise ValueError(f"{item_dir} is not an OCDBT checkpoint; t5pod writes only those")
    return bool(meta.get("use_zarr3", False))


def read_rows(item_dir: str, specs: dict, row: int) -> RowsRead:
    """Row `row` of each array `specs` names ({orbax name: ShapeDtypeStruct of the whole
    array}) in the orbax item directory `item_dir` (e.g. STEP/state), as numpy [1, ...]."""
    context = ocp.type_handlers.get_ts_context(use_ocdbt=True)
    zarr3 = _uses_zarr3(item_dir)
    parent = epath.Path(item_dir)
    opened = {}
    for name in specs:
        info = ocp.type_handlers.ParamInfo(name=name, parent_dir=parent, use_zarr3=zarr3,
                                           ts_context=context)
        spec = ocp.type_handlers.get_json_tspec_read(info, use_ocdbt=True)
        opened[name] = ts.open(spec, context=context, open=True, read=True)
    stores = {name: future.result() for name, future in opened.items()}
    for name, store in stores.items():
        want = specs[name].shape
        if tuple(store.shape) != tuple(want):
            raise ValueError(f"{item_dir}: array {name} has shape {tuple(store.shape)}, the "
                             f"model needs {tuple(want)}")
        if not 0 <= row < want[0]:
            raise ValueError(f"row {row} is out of range for {name} of shape {tuple(want)}")
    reads = {name: store[row:row + 1].read() for name, store in stores.items()}
    arrays = {name: np.asarray(future.result(), specs[name].dtype)
              for name, future in reads.items()}
    chunked = all(s.chunk_layout.read_chunk.shape[0] == 1 for s in stores.values())
    return RowsRead(arrays, chunked)
