"""Task settings: what task code reads beyond a task's name, as one frozen value.

Benchmark directories (MMLU, BBH), the Flan 2022 export and its mixing, a user's corpus and
JSONL files, instruction formatting and mixing, WikiSpell and Zipf corpus sizes. `BUILDERS`
is the one list of them: each is a function of plain values returning its typed config,
known to gin as `tasks.NAME` (runner/configurables.py) and read from a mapping by
`from_mapping`; a FeedConfig carries the resulting `TaskSettings`.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from typing import Callable, Mapping

from tasks import wikispell
from tasks.benchmarks import bbh, mmlu
from tasks.flan2022 import flan_collection
from tasks.instruction_tuning import flan_mixtures, instruction_sources, instructions
from tasks.pretraining import text_files, zipf_corpus

BUILDERS: dict[str, Callable] = {
    "mmlu": mmlu.mmlu,
    "bbh": bbh.bbh,
    "flan2022": flan_collection.flan2022,
    "instruction_format": instructions.instruction_format,
    "instruction_jsonl": instruction_sources.instruction_jsonl,
    "instruction_mixing": flan_mixtures.instruction_mixing,
    "text_corpus": text_files.text_corpus,
    "wikispell": wikispell.wikispell,
    "zipf_corpus": zipf_corpus.zipf_corpus,
}


@dataclasses.dataclass(frozen=True)
class TaskSettings:
    mmlu: mmlu.MMLUConfig = mmlu.MMLUConfig()
    bbh: bbh.BBHConfig = bbh.BBHConfig()
    flan2022: flan_collection.Flan2022 = flan_collection.Flan2022()
    instruction_format: instructions.InstructionFormat = instructions.InstructionFormat()
    instruction_jsonl: instruction_sources.JsonlTask = instruction_sources.JsonlTask()
    instruction_mixing: flan_mixtures.Mixing = flan_mixtures.Mixing()
    text_corpus: text_files.TextCorpus = text_files.TextCorpus()
    wikispell: wikispell.WikiSpellConfig = wikispell.WikiSpellConfig()
    zipf_corpus: zipf_corpus.ZipfCorpusConfig = zipf_corpus.ZipfCorpusConfig()

    def __post_init__(self):
        for field in dataclasses.fields(self):
            kind, value = type(field.default), getattr(self, field.name)
            if not isinstance(value, kind):
                raise TypeError(f"TaskSettings.{field.name}={value!r} must be a "
                                f"{kind.__name__} (what tasks.{field.name}(...) returns)")


def parameters() -> dict[str, list[str]]:
    """{'tasks.NAME': its parameters} for every setting (gin's did-you-mean list)."""
    return {f"tasks.{name}": list(inspect.signature(builder).parameters)
            for name, builder in BUILDERS.items()}


def _close(name: str, valid) -> str:
    close = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.5)
    return (f"did you mean {close}? " if close else "") + f"valid: {sorted(valid)}"


def from_mapping(mapping: Mapping[str, Mapping]) -> TaskSettings:
    """TaskSettings from {NAME: {parameter: value}}, e.g. {'mmlu': {'data_dir': '/data'}};
    an unknown NAME or parameter is refused naming it and its close matches."""
    if isinstance(mapping, TaskSettings):
        return mapping
    if not isinstance(mapping, Mapping):
        raise TypeError(f"task settings {mapping!r} must be a mapping of setting name -> "
                        f"{{parameter: value}}; settings: {sorted(BUILDERS)}")
    values = {}
    for name, given in mapping.items():
        if name not in BUILDERS:
            raise ValueError(f"unknown task setting {name!r}; " + _close(name, BUILDERS))
        if not isinstance(given, Mapping):
            raise TypeError(f"task setting {name!r}={given!r} must be a mapping of "
                            f"parameter -> value")
        params = inspect.signature(BUILDERS[name]).parameters
        for key in given:
            if key not in params:
                raise ValueError(f"task setting tasks.{name} has no parameter {key!r}; "
                                 + _close(key, params))
        values[name] = BUILDERS[name](**given)
    return TaskSettings(**values)
