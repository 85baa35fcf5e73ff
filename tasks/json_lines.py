"""The one reader of JSON-lines files (a text corpus, instruction data, Flan shards):
a record per non-blank line, gzip-compressed where the name ends in `.gz`. A line that is
not UTF-8, not JSON or not a JSON object fails naming the file, the line and what is
wrong; nothing after a bad line is read."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

from fields import paths


def records(path: str) -> Iterator[tuple[str, dict]]:
    """("path:line", record) of each record of `path` (local, gs:// or s3://), streamed."""
    with paths.open_read(path, "rb") as raw, (gzip.open(raw, "rb") if path.endswith(".gz")
                                              else raw) as f:
        for number, data in enumerate(f, 1):
            where = f"{path}:{number}"
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{where} is not UTF-8 text: {e}") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where} is not valid JSON: {e}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where} is a JSON {type(record).__name__}, not an object "
                                 f"({line.strip()[:60]!r}); each line must be one record "
                                 "{\"field\": value, ...}")
            yield where, record
