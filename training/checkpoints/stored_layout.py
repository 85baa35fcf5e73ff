"""Where each array chunk of an orbax (OCDBT) checkpoint item lies, and how many bytes it is.

OCDBT keeps one B-tree of keys (`ARRAY_NAME/CHUNK_INDEX` per zarr chunk, plus metadata keys)
whose values are either inline in a tree node or byte ranges of data files.
`stored_values` walks that tree with tensorstore's public `tensorstore.ocdbt.dump` (it reads
the manifest and the tree nodes, never a value) and gives every key's stored size and, for
values in data files, the file (relative to the item directory) and byte range. It says how
many bytes a tree's params and each of its branches take in a checkpoint, without reading
them; a test uses the ranges to damage exactly the bytes of other branches.
"""

from __future__ import annotations

import ast
import dataclasses

import orbax.checkpoint as ocp
import tensorstore as ts
import tensorstore.ocdbt as ocdbt
from etils import epath


@dataclasses.dataclass(frozen=True)
class StoredValue:
    size: int
    file: str | None = None    # relative to the item directory; None: inline in a tree node
    offset: int | None = None


def _key(text) -> bytes:
    return ast.literal_eval(text) if isinstance(text, str) else bytes(text)


def _value(entry: dict) -> StoredValue:
    if "inline_value" in entry:
        return StoredValue(len(_key(entry["inline_value"])))
    # "value:PREFIX:FILE:OFFSET:LENGTH", PREFIX e.g. "ocdbt.process_0/" or empty
    head, offset, length = entry["indirect_value"].rsplit(":", 2)
    _, prefix, name = head.split(":", 2)
    return StoredValue(int(length), prefix + name, int(offset))


def _base(item_dir: str) -> ts.KvStore:
    """The kvstore OCDBT sits on (local directory or bucket), as orbax opens it."""
    info = ocp.type_handlers.ParamInfo(
        name="x", parent_dir=epath.Path(item_dir), use_zarr3=False,
        ts_context=ocp.type_handlers.get_ts_context(use_ocdbt=True))
    spec = ocp.type_handlers.get_json_tspec_read(info, use_ocdbt=True)
    return ts.KvStore.open(spec["kvstore"]["base"]).result()


def stored_values(item_dir: str) -> dict[str, StoredValue]:
    """{key: StoredValue} of every key in the newest version of the item's OCDBT database."""
    base = _base(item_dir)
    versions = ocdbt.dump(base).result()["versions"]
    root = versions[-1]["root"] if versions else {}
    out: dict[str, StoredValue] = {}
    if "location" not in root:
        return out

    def walk(location: str, prefix: bytes) -> None:
        for entry in ocdbt.dump(base, location).result()["entries"]:
            key = prefix + _key(entry["key"])
            if "location" in entry:  # an interior node: its subtree's keys share a prefix
                walk(entry["location"], prefix + _key(entry.get("subtree_common_prefix", b"")))
            else:
                out[key.decode()] = _value(entry)

    walk(root["location"], b"")
    return out


def chunk_index(key: str) -> tuple[str, tuple[int, ...]] | None:
    """(array name, chunk grid index) of a chunk key (zarr 2 `NAME/I.J.K`, zarr 3
    `NAME/c/I/J/K`; orbax's names have no slash), or None for a metadata key."""
    if "/c/" in key:
        name, _, rest = key.partition("/c/")
        parts = rest.split("/")
    else:
        name, _, chunk = key.rpartition("/")
        parts = chunk.split(".")
    if not name or not all(p.isdigit() for p in parts):
        return None
    return name, tuple(int(p) for p in parts)
