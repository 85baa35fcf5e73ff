"""What a task cache holds, as a JSON-able value compared field by field.

A cache (tasks/cache/cache_layout.py) is one pass over a task's split, preprocessed, converted and
packed at fixed lengths. Reading it for a run whose input would differ would silently train
on other data, so the cache records its spec and a reader refuses a mismatch naming the
field: task, split, lengths, packing, each feature's vocabulary (SentencePiece models by
content hash), the preprocessors and t5pod's PREPROCESSING_VERSION, and the task settings
the task read while caching (e.g. its corpus files).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re

import seqio

FORMAT = 1
# Bump when t5pod's own preprocessing (span corruption, formatting, packing converters)
# changes what it outputs for the same arguments: every older cache is then refused.
PREPROCESSING_VERSION = 1


def _plain(value):
    """JSON's view of a value (tuples as lists), for comparing with what a cache stored."""
    return json.loads(json.dumps(value, default=repr, sort_keys=True))


def describe_callable(fn) -> str:
    """A stable name for a preprocessor: module.name, with a partial's arguments."""
    if isinstance(fn, functools.partial):
        args = [repr(a) for a in fn.args] + [f"{k}={v!r}" for k, v in sorted(fn.keywords.items())]
        text = f"{describe_callable(fn.func)}({', '.join(args)})"
    elif hasattr(fn, "__qualname__"):
        text = f"{getattr(fn, '__module__', '?')}.{fn.__qualname__}"
    else:
        text = repr(fn)
    return re.sub(r" at 0x[0-9a-f]+", "", text)


def describe_vocabulary(vocab) -> dict:
    out = {"class": type(vocab).__name__, "vocab_size": int(vocab.vocab_size),
           "extra_ids": int(getattr(vocab, "extra_ids", 0) or 0)}
    model = getattr(vocab, "sp_model", None)
    if model:
        out["sha256"] = hashlib.sha256(model).hexdigest()[:16]
    return out


def task_spec(task: seqio.Task, split: str, lengths: dict, pack: bool, settings,
              read) -> dict:
    """The spec of caching `task`: `settings` the run's TaskSettings, `read` the names of
    the settings the task read while building its data."""
    return {"format": FORMAT, "task": task.name, "split": split,
            "task_feature_lengths": _plain(dict(lengths)), "pack": bool(pack),
            "vocabularies": {k: describe_vocabulary(f.vocabulary)
                             for k, f in sorted(task.output_features.items())},
            "preprocessing": {"version": PREPROCESSING_VERSION,
                              "source": describe_source(task.source),
                              "steps": [describe_callable(p) for p in task.preprocessors]},
            "task_settings": settings_values(settings, read)}


def settings_values(settings, names) -> dict:
    return {n: _plain(dataclasses.asdict(getattr(settings, n))) for n in sorted(names)}


def describe_source(source) -> str:
    if isinstance(source, seqio.TfdsDataSource):
        return f"tfds:{source.tfds_dataset.name}"
    fn = getattr(source, "_dataset_fn", None)
    return f"{type(source).__name__}:{describe_callable(fn) if fn else ''}"


def _flat(value, prefix=""):
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def differences(stored: dict, wanted: dict) -> list[str]:
    """'field: cache X, this run Y' for every field that differs (dotted names)."""
    a, b = _flat(_plain(stored)), _flat(_plain(wanted))
    return [f"{k}: cache {a.get(k, '(absent)')!r}, this run {b.get(k, '(absent)')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
