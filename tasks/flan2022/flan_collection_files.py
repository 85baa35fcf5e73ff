"""Reading an exported Flan 2022 collection: a directory tree of JSONL and Parquet shards.

Every record has string fields `inputs`, `targets`, `task_source`, `task_name` and, in most
exports, `template_type`; the last three may be spelled `_task_source`, `_task_name`,
`_template_type` (seqio's passthrough names, as FLAN's run_example.py writes them); anything
else (e.g. `_template_idx`) is ignored. Records are
streamed file by file in sorted path order (a Parquet file by record batches, a JSONL file
line by line), so a multi-GB export is never held in memory. A bad record names its file
and line (JSONL, 1-based) or row (Parquet, 0-based) and what would be valid.

The sub-mixture of a record is its `task_source`, in any spelling the public exports use
(case, `-`, `_` and spaces ignored): Flan2021 / flan, T0 / P3, NIv2, CoT, Dialog.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

from fields import paths
from tasks import json_lines

SUB_MIXTURES = ("flan", "t0", "niv2", "cot", "dialog")
SOURCE_SPELLINGS = {"flan2021": "flan", "flan": "flan", "t0": "t0", "p3": "t0",
                    "niv2": "niv2", "cot": "cot", "dialog": "dialog"}
TEMPLATE_TYPES = ("zs_opt", "fs_opt", "zs_noopt", "fs_noopt")
REQUIRED = ("inputs", "targets", "task_source", "task_name")
PREFIXED = ("task_source", "task_name", "template_type")   # also read as `_NAME`
SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")
PARQUET_BATCH = 1024


def _key(text: str) -> str:
    return text.lower().replace("-", "").replace("_", "").replace(" ", "")


def sub_mixture_of(task_source: str, where: str) -> str:
    """The sub-mixture ('flan', 't0', 'niv2', 'cot', 'dialog') a task_source names."""
    found = SOURCE_SPELLINGS.get(_key(task_source))
    if found is None:
        raise ValueError(f"{where}: unknown task_source {task_source!r}; valid: Flan2021 (or "
                         "flan), T0 (or P3), NIv2, CoT, Dialog (any case)")
    return found


def template_type_of(text: str, where: str) -> str:
    """'zs_opt' etc. from any spelling ('ZSOpt', 'zsopt', 'zs_opt')."""
    found = {_key(t): t for t in TEMPLATE_TYPES}.get(_key(text))
    if found is None:
        raise ValueError(f"{where}: unknown template_type {text!r}; valid: "
                         f"{list(TEMPLATE_TYPES)} (any case, with or without '_')")
    return found


@dataclasses.dataclass(frozen=True)
class Record:
    inputs: str
    targets: str
    task_name: str
    sub_mixture: str
    template_type: str | None   # None: the export has no template_type field


def find_files(directory: str | None) -> list[str]:
    """The export's shards under `directory` (recursively), in sorted order."""
    if not directory:
        raise ValueError("no Flan 2022 export directory: set --gin.FLAN2022_DIR=/path/to/export "
                         "(or tasks.flan2022.directory in gin)")
    directory = paths.user_path(directory, "tasks.flan2022.directory")
    if not paths.isdir(directory):
        raise FileNotFoundError(f"Flan 2022 export directory {directory!r} does not exist or is "
                                "not a directory (FLAN2022_DIR / tasks.flan2022.directory)")
    files, others = [], []
    for rel in paths.walk_files(directory):
        (files if rel.endswith(SUFFIXES) else others).append(paths.join(directory, rel))
    if not files:
        raise FileNotFoundError(f"Flan 2022 export directory {directory!r} holds no "
                                f"{'/'.join('*' + s for s in SUFFIXES)} files"
                                + (f"; it has {others[:5]}" if others else " (it is empty)"))
    return sorted(files)


def spelling(names, name: str) -> str:
    """`name`, or `_name` where only that is among `names` (a record's keys, columns)."""
    return f"_{name}" if name in PREFIXED and name not in names and f"_{name}" in names else name


def _unprefixed(row: dict) -> dict:
    return {name: row.get(spelling(row, name)) for name in REQUIRED + ("template_type",)
            if spelling(row, name) in row}


def _record(row: dict, where: str) -> Record:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a record must be a JSON object with fields "
                         f"{list(REQUIRED)}, got {type(row).__name__}")
    given, row = sorted(row), _unprefixed(row)
    for name in REQUIRED:
        value = row.get(name)
        if not isinstance(value, str):
            problem = "is missing" if name not in row else (
                f"is {type(value).__name__} {value!r:.40}, not a string")
            raise ValueError(f"{where}: field {name!r} {problem}; every record needs string "
                             f"fields {list(REQUIRED)} (and optionally 'template_type'; "
                             f"{list(PREFIXED)} may start with '_'); it has {given}")
    template = row.get("template_type")
    if template is not None and not isinstance(template, str):
        raise ValueError(f"{where}: field 'template_type' is {type(template).__name__}, not a "
                         f"string; valid: {list(TEMPLATE_TYPES)}")
    return Record(row["inputs"], row["targets"], row["task_name"],
                  sub_mixture_of(row["task_source"], where),
                  template_type_of(template, where) if template is not None else None)


def parquet_schema_check(path: str):
    """The ParquetFile, after checking it has the required string columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # a bucket object through a file object pyarrow reads ranges of (never whole)
        parquet = pq.ParquetFile(paths.epath_of(path).open("rb") if paths.is_bucket(path)
                                 else path)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path} is not a readable Parquet file: {e}") from None
    schema = parquet.schema_arrow
    for name in (spelling(schema.names, n) for n in REQUIRED + ("template_type",)):
        if name not in schema.names:
            if name == "template_type":
                continue
            raise ValueError(f"{path}: Parquet file has no column {name!r}; columns: "
                             f"{schema.names}; every record needs string fields "
                             f"{list(REQUIRED)} ({list(PREFIXED)} may start with '_')")
        kind = schema.field(name).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise ValueError(f"{path}: Parquet column {name!r} is {kind}, not a string")
    return parquet


def parquet_columns(parquet) -> list[str]:
    """The columns read of a checked ParquetFile, as it spells them."""
    names = parquet.schema_arrow.names
    return [c for c in (spelling(names, n) for n in REQUIRED + ("template_type",))
            if c in names]


def _parquet_rows(path: str) -> Iterator[tuple[str, dict]]:
    parquet = parquet_schema_check(path)
    row = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH,
                                      columns=parquet_columns(parquet)):
        for record in batch.to_pylist():
            yield f"{path} row {row}", record
            row += 1


def rows(path: str) -> Iterator[tuple[str, dict]]:
    """(location, raw record) of each record of one shard."""
    return _parquet_rows(path) if path.endswith(".parquet") else json_lines.records(path)


def records(files: list[str]) -> Iterator[tuple[str, Record]]:
    """(location, validated Record) of every record of the shards, in order."""
    for path in files:
        for where, row in rows(path):
            yield where, _record(row, where)


def parquet_sub_mixtures(path: str) -> set[str]:
    """The sub-mixtures a Parquet shard holds (its task_source column alone is read)."""
    import pyarrow.compute as pc

    parquet = parquet_schema_check(path)
    source = spelling(parquet.schema_arrow.names, "task_source")
    column = parquet.read(columns=[source]).column(0)
    found = set()
    for value in pc.unique(column).to_pylist():
        if value is None:
            row = pc.index(pc.is_null(column), True).as_py()
            raise ValueError(f"{path} row {row}: field {source!r} is null, not a string")
        found.add(sub_mixture_of(value, f"{path} row {pc.index(column, value).as_py()}"))
    return found


def survey(files: list[str]) -> dict[str, set[str] | None]:
    """Cheap checks before streaming, and what each shard holds: a Parquet shard's columns
    and sub-mixtures (its task_source column is read), a JSONL shard's first record (None:
    not known before reading it). A bad record further on fails when the stream reaches it."""
    out: dict[str, set[str] | None] = {}
    for path in files:
        if path.endswith(".parquet"):
            out[path] = parquet_sub_mixtures(path)
            continue
        first = next(iter(json_lines.records(path)), None)
        if first is None:
            raise ValueError(f"{path} holds no records")
        _record(first[1], first[0])
        out[path] = None
    return out
