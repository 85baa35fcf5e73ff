"""The files of a task cache, and the one rule that keeps a partial cache from being read.

    CACHE_DIR/shard-00000-of-00008.array_record ...   ArrayRecord files (group_size 1)
    CACHE_DIR/cache_info.json                          written last, atomically

A mixture's cache is one such directory per task, CACHE_DIR/TASK/, and
CACHE_DIR/mixture_info.json (its rates), written after every task's.

A record is one converted (packed) row: each feature's fixed-shape array, in the order and
dtypes `cache_info.json` lists, as raw bytes. The info file also holds the cache's spec
(tasks/cache/cache_spec.py) and every shard's name, record count and byte size. It is written
only after every shard is in place, by rename, so a cache is complete exactly when it has
an info file and every shard it lists has that size; anything else is refused.
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np

from fields import paths

INFO = "cache_info.json"
MIXTURE_INFO = "mixture_info.json"
SHARD = re.compile(r"shard-(\d{5})-of-(\d{5})\.array_record$")


class IncompleteCache(ValueError):
    """A cache directory that is partial, damaged or not a cache: never read as data."""


def shard_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}.array_record"


def features_of(example: dict) -> list:
    """[[name, dtype, shape], ...] of a converted row, sorted by name."""
    return [[k, str(np.asarray(v).dtype), list(np.shape(v))] for k, v in sorted(example.items())]


def encode(example: dict, features: list) -> bytes:
    parts = []
    for name, dtype, shape in features:
        value = np.asarray(example[name])
        if list(value.shape) != shape or str(value.dtype) != dtype:
            raise ValueError(f"feature {name!r} is {value.dtype}{list(value.shape)}, but this "
                             f"cache holds {dtype}{shape}: the converter must pad to fixed "
                             "lengths")
        parts.append(np.ascontiguousarray(value).tobytes())
    return b"".join(parts)


def decoder(features: list):
    """decode(record) -> {name: array}, the inverse of `encode`."""
    layout, offset = [], 0
    for name, dtype, shape in features:
        size = int(np.dtype(dtype).itemsize * np.prod(shape, dtype=np.int64))
        layout.append((name, np.dtype(dtype), tuple(shape), offset, size))
        offset += size

    def decode(record: bytes) -> dict:
        if len(record) != offset:
            raise IncompleteCache(f"a cache record has {len(record)} bytes, {offset} expected")
        return {name: np.frombuffer(record, dtype, count=size // dtype.itemsize,
                                    offset=start).reshape(shape)
                for name, dtype, shape, start, size in layout}

    return decode


def write_info(cache_dir: str, info: dict, name: str = INFO) -> None:
    """Commit the cache: the info file appears whole, after every shard it names."""
    paths.write_text(paths.join(cache_dir, name), json.dumps(info, indent=1, sort_keys=True))


def read_mixture_info(cache_dir: str) -> dict:
    """A complete mixture cache's info ({'mixture', 'rates'}), else IncompleteCache."""
    path = paths.join(cache_dir, MIXTURE_INFO)
    if not paths.exists(path):
        raise IncompleteCache(f"{cache_dir} is not a complete mixture cache: it has no "
                              f"{MIXTURE_INFO} (its caching job did not finish, or it caches "
                              "a task); rerun python -m tools.cache_tasks")
    try:
        info = json.loads(paths.read_text(path))
        dict(info["rates"])
    except (ValueError, KeyError, TypeError) as e:
        raise IncompleteCache(f"{path} is not a t5pod mixture info file ({e})") from None
    return info


def shard_files(cache_dir: str) -> list[str]:
    """The shard files present (complete or not), sorted."""
    return [n for n in paths.listdir(cache_dir) if SHARD.match(n)]


def read_info(cache_dir: str) -> dict:
    """The info of a complete cache; IncompleteCache naming what is missing or wrong."""
    path = paths.join(cache_dir, INFO)
    if not paths.isdir(cache_dir):
        raise IncompleteCache(f"cache directory {cache_dir} does not exist: cache the task "
                              "first (python -m tools.cache_tasks)")
    if not paths.exists(path):
        present = shard_files(cache_dir)
        raise IncompleteCache(
            f"{cache_dir} is not a complete cache: it has no {INFO}"
            + (f" but {len(present)} shard file(s), so its caching job did not finish; rerun "
               "python -m tools.cache_tasks" if present else " (not a t5pod cache)"))
    try:
        info = json.loads(paths.read_text(path))
        shards = info["shards"]
    except (ValueError, KeyError, TypeError) as e:
        raise IncompleteCache(f"{path} is not a t5pod cache info file ({e})") from None
    present = set(paths.listdir(cache_dir))
    for shard in shards:
        file = paths.join(cache_dir, shard["file"])
        if shard["file"] not in present:
            raise IncompleteCache(f"{file} is missing from the cache {cache_dir}")
        size = paths.getsize(file)
        if size != shard["bytes"]:
            raise IncompleteCache(f"{file} has {size} bytes, {shard['bytes']} "
                                  "when cached: truncated or overwritten; cache again")
    return info


def fingerprint(info: dict) -> str:
    """A short hash of what the cache holds (its spec and shards)."""
    text = json.dumps({"spec": info["spec"], "shards": info["shards"], "seed": info["seed"]},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
