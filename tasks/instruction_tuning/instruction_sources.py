"""Where instruction tasks get their rows: TFDS datasets, a user's JSONL files, WikiSpell and
the embedded demo corpus. Every loader returns a list of {field: str} dicts for a split.

A user's JSONL files become the task `flan_jsonl`, fields and templates set by gin:

    tasks.instruction_jsonl.train = '/data/qa_train.jsonl'
    tasks.instruction_jsonl.validation = '/data/qa_dev.jsonl'
    tasks.instruction_jsonl.fields = {'question': 'q', 'answer': 'a'}   # task field: JSON key
    tasks.instruction_jsonl.templates = [('Answer the question: {question}', '{answer}'),
                                         ('{question}\nWhat is the answer?', '{answer}')]
    tasks.instruction_jsonl.options = []     # answer choices, if it is a classification task
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

from tasks.pretraining import corpus, text_files
from tasks import json_lines, settings_scope
from tasks import wikispell
from tasks.instruction_tuning.instructions import InstructionTask, Template


def clear_caches() -> None:
    """Forget loaded rows (tests that swap TFDS mock data or files in one process)."""
    _tfds_rows.cache_clear()
    _jsonl_rows.cache_clear()


def tfds_loader(tfds_name: str, convert: Callable[[dict], dict],
                split_names: dict | None = None):
    """rows(split) of a TFDS dataset, each record turned into string fields by `convert`."""
    def rows(split: str) -> list[dict]:
        from tasks.tfds_prepared import under_tfds_mock

        name = (split_names or {}).get(split, split)
        return [convert(r) for r in _tfds_rows(tfds_name, name, under_tfds_mock())]
    return rows


@functools.lru_cache(maxsize=32)
def _tfds_rows(tfds_name: str, split: str, mocked: bool) -> tuple:
    import seqio

    source = seqio.TfdsDataSource(tfds_name=tfds_name)
    if not mocked:
        from tasks.tfds_prepared import check_tfds_dataset_prepared

        check_tfds_dataset_prepared(tfds_name, source.tfds_dataset.data_dir)
    ds = source.get_dataset(split, shuffle=False)
    return tuple(ds.as_numpy_iterator())


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- a user's JSONL files -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class JsonlTask:
    train: tuple[str, ...] = ()
    validation: tuple[str, ...] = ()
    fields: tuple[tuple[str, str], ...] = ()     # (task field, JSON key)
    templates: tuple[tuple[str, str], ...] = ()  # (inputs, targets) format strings
    options: tuple[str, ...] = ()

    def spec(self) -> InstructionTask:
        if not self.fields or not self.templates:
            raise ValueError("flan_jsonl needs tasks.instruction_jsonl.fields (task field -> "
                             "JSON key) and tasks.instruction_jsonl.templates ((inputs, "
                             "targets) format strings) bound in gin")
        return InstructionTask("flan_jsonl", tuple(Template(*t) for t in self.templates),
                               tuple(f for f, _ in self.fields), tuple(self.options))


def instruction_jsonl(train=(), validation=(), fields=None, templates=(),
                      options=()) -> JsonlTask:
    def as_tuple(patterns):
        return (patterns,) if isinstance(patterns, str) else tuple(patterns)
    bad = [t for t in templates if not (isinstance(t, (tuple, list)) and len(t) == 2)]
    if bad:
        raise ValueError(f"tasks.instruction_jsonl.templates entries must be (inputs, targets) "
                         f"pairs of format strings; got {bad}")
    return JsonlTask(as_tuple(train), as_tuple(validation), tuple((fields or {}).items()),
                     tuple(tuple(t) for t in templates), tuple(options))


def jsonl_spec() -> InstructionTask:
    return settings_scope.get("instruction_jsonl", JsonlTask).spec()


def jsonl_rows(split: str) -> list[dict]:
    config = settings_scope.get("instruction_jsonl", JsonlTask)
    patterns = text_files.split_patterns(config, split, "flan_jsonl",
                                         "tasks.instruction_jsonl", "/path/to/*.jsonl")
    return list(_jsonl_rows(patterns, config.fields))


@functools.lru_cache(maxsize=8)
def _jsonl_rows(patterns: tuple[str, ...], fields: tuple[tuple[str, str], ...]) -> tuple:
    rows = []
    for path in text_files.resolve_files(patterns):
        for where, record in json_lines.records(path):
            missing = [key for _, key in fields if key not in record]
            if missing:
                raise KeyError(f"{where} has no field(s) {missing} mapped by "
                               f"tasks.instruction_jsonl.fields={dict(fields)}; the record "
                               f"has {sorted(record)}")
            rows.append({name: text(record[key]) for name, key in fields})
    if not rows:
        raise ValueError(f"flan_jsonl files {list(patterns)} hold no records")
    return tuple(rows)


# --- offline sources ------------------------------------------------------------------------

def wikispell_rows(split: str) -> list[dict]:
    return [{"word": r["inputs"], "answer": r["targets"]} for r in wikispell.examples(split)]


def wikispell_frequency_rows(split: str) -> list[dict]:
    """WikiSpell's words labelled by how frequent they are: "rare" (the bottom half of the
    word list) or "common" (the top half). Train as WikiSpell draws its words (half each);
    validation balanced: every rare word, as many common ones taken evenly across the top
    buckets, alternating."""
    rows = wikispell.examples(split)
    rare = [r for r in rows if r["bucket"] == "bottom_50"]
    common = [r for r in rows if r["bucket"] != "bottom_50"]
    if split != "train" and rare:
        common = common[::max(1, len(common) // len(rare))][:len(rare)]
        rows = [r for pair in zip(rare, common, strict=True) for r in pair]
    return [{"word": r["inputs"],
             "frequency": "rare" if r["bucket"] == "bottom_50" else "common"} for r in rows]


DEMO_WORDS = 24   # a passage: the first words of a demo-corpus paragraph


def demo_rows(split: str) -> list[dict]:
    out = []
    for paragraph in corpus.split(split):
        words = paragraph.split()[:DEMO_WORDS]
        last = words[-1].strip(".,;:()'\"`")
        out.append({"text": " ".join(words), "first_words": " ".join(words[:3]),
                    "last_word": last or words[-1]})
    return out
