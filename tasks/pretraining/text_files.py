"""A user's own corpus: plain text (one example per line) or JSONL files, bound by gin.

    tasks.text_corpus.train = '/data/my_corpus/*.txt'
    tasks.text_corpus.validation = 'gs://bucket/held_out.jsonl'   # or s3://, a local path
    tasks.text_corpus.field = 'text'          # JSONL key

The files are the source's shards: with at least as many files as hosts, seqio gives each
host its own files (host i reads files i, i + n, ...) and no host opens another's.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable

import seqio

from fields import paths
from fields.choices import require_choice
from tasks import json_lines, settings_scope
from tasks.tf_setup import tf


@dataclasses.dataclass(frozen=True)
class TextCorpus:
    train: tuple[str, ...] = ()
    validation: tuple[str, ...] = ()
    field: str = "text"


def text_corpus(train=(), validation=(), field: str = "text") -> TextCorpus:
    def as_tuple(patterns):
        return (patterns,) if isinstance(patterns, str) else tuple(patterns)
    return TextCorpus(as_tuple(train), as_tuple(validation), field)


def resolve_files(patterns: Iterable[str]) -> list[str]:
    """Files matching `patterns`; every pattern must match a non-empty readable file."""
    files = []
    for pattern in patterns:
        pattern = paths.user_path(pattern, "tasks.text_corpus") if pattern.strip() else pattern
        matched = paths.glob(pattern)
        if not matched:
            raise FileNotFoundError(f"corpus pattern {pattern!r} matches no file")
        for path in matched:
            if not paths.is_bucket(path) and not os.access(path, os.R_OK):
                raise PermissionError(f"corpus file {path} is not readable")
            if paths.getsize(path) == 0:
                raise ValueError(f"corpus file {path} is empty")
        files.extend(matched)
    return files


def _texts_of(path: str, field: str):
    if path.endswith((".jsonl", ".json")):
        for where, record in json_lines.records(path):
            if field not in record:
                raise KeyError(f"{where} has no field {field!r} (fields: {sorted(record)}); "
                               "set tasks.text_corpus.field")
            yield str(record[field])
        return
    try:
        with paths.open_read(path, "rb") as f:
            for raw in f:
                line = raw.decode("utf-8").replace("\r\n", "\n")
                if line.strip():
                    yield line.rstrip("\n")
    except UnicodeDecodeError as e:
        raise ValueError(f"corpus file {path} is not UTF-8 text: {e}") from None


def read_texts(patterns: Iterable[str], field: str = "text") -> list[str]:
    texts = [t for path in resolve_files(patterns) for t in _texts_of(path, field)]
    if not texts:
        raise ValueError(f"corpus {list(patterns)} holds no text")
    return texts


def split_patterns(config, split: str, task: str, binding: str, example: str) -> tuple:
    """The file patterns a gin-bound corpus config (with `train`/`validation`) gives `split`."""
    require_choice(task, "split", split, ("train", "validation"))
    patterns = {"train": config.train, "validation": config.validation}[split]
    if not patterns:
        raise ValueError(f"no files bound for the {split!r} split of {task}: set "
                         f"{binding}.{split} = '{example}' (gin)")
    return patterns


def _corpus_files(split: str) -> tuple[TextCorpus, list[str]]:
    corpus = settings_scope.get("text_corpus", TextCorpus)
    patterns = split_patterns(corpus, split, "text_span_corruption", "tasks.text_corpus",
                              "/path/to/*.txt")
    return corpus, resolve_files(patterns)


def text_dataset(split: str, shuffle_files: bool = False, seed: int | None = None,
                 files: list[str] | None = None):
    """tf.data of {'text'} from the gin-bound corpus (or these of its `files`)."""
    corpus, every = _corpus_files(split)
    texts = [t for path in (every if files is None else files)
             for t in _texts_of(path, corpus.field)]
    if not texts:
        raise ValueError(f"corpus files {files or every} hold no text")
    ds = tf.data.Dataset.from_tensor_slices({"text": tf.constant(texts)})
    return ds.shuffle(len(texts), seed=seed) if shuffle_files else ds


class TextFilesSource(seqio.FunctionDataSource):
    """The corpus files as a seqio source whose shards are the files."""

    def __init__(self):
        super().__init__(text_dataset, splits=("train", "validation"))

    def list_shards(self, split: str) -> list[str]:
        return _corpus_files(split)[1]

    def get_dataset(self, split: str = "train", shuffle: bool = True,
                    seed: int | None = None, shard_info=None, **unused):
        files = self.list_shards(split)
        if shard_info is not None and shard_info.num_shards > 1:
            files = files[shard_info.index::shard_info.num_shards]
        return text_dataset(split, shuffle, seed, files)
