"""The Flan 2022 collection (Longpre et al. 2023) as seqio tasks, from its exported files.

One seqio Task per sub-mixture: `flan2022_flan` (Flan 2021), `flan2022_t0` (T0/P3),
`flan2022_niv2` (Super-Natural Instructions), `flan2022_cot` (chain of thought) and
`flan2022_dialog`, each streaming the records of the export whose `task_source` names it
(tasks/flan_collection_files.py); the Mixture `flan2022` samples them at the paper's rates,
0.4 / 0.32 / 0.2 / 0.05 / 0.03. Inside a sub-mixture each `task_name` keeps at most its
sub-mixture's cap of examples (Flan's caps: 30k, 20k, 5k, 100k, 200k), so drawing uniformly
from the sub-mixture gives each task the examples-proportional, capped rate
min(n, cap) / sum(min(n, cap)) Flan mixes tasks by.

Why per sub-mixture and not per task_name: seqio tasks are registered when `tasks` is
imported, before gin names a directory, and the collection has about 1,800 task_names; a
seqio Mixture over that many would build as many tf.data pipelines and shuffle buffers.

Records are read in sorted file order, so which examples a capped task keeps, and the
validation split (the first `validation_examples` records of each sub-mixture, which
training never sees), are the same on every run and host; order within training comes
from a `shuffle_buffer` of records, then seqio's shuffle. Each host reads every shard and
keeps its share of the examples (seqio shards a FunctionDataSource by example).

    tasks.flan2022.directory = %FLAN2022_DIR
    tasks.flan2022.rates = {'niv2': 0.0}          # overrides; sub-mixtures not named keep theirs
    tasks.flan2022.caps = {'niv2': 5000}          # or one int for every sub-mixture
    tasks.flan2022.template_types = ['zs_opt', 'fs_opt']
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
from typing import Iterator, Mapping

import seqio

from tasks import flan_collection_files as files_
from fields.integers import require_int
from tasks import settings_scope
from tasks.flan_collection_files import SUB_MIXTURES, TEMPLATE_TYPES
from tasks.tf_setup import tf

RATES = {"flan": 0.4, "t0": 0.32, "niv2": 0.2, "cot": 0.05, "dialog": 0.03}
CAPS = {"flan": 30_000, "t0": 20_000, "niv2": 5_000, "cot": 100_000, "dialog": 200_000}
MIXTURE = "flan2022"
FEATURES = ("inputs", "targets", "task_name", "template_type")


def task_name(sub_mixture: str) -> str:
    return f"{MIXTURE}_{sub_mixture}"


@dataclasses.dataclass(frozen=True)
class Flan2022:
    directory: str | None = None
    rates: tuple[tuple[str, float], ...] = tuple(RATES.items())
    caps: tuple[tuple[str, int], ...] = tuple(CAPS.items())
    template_types: tuple[str, ...] = TEMPLATE_TYPES
    validation_examples: int = 1000     # per sub-mixture, held out of training
    shuffle_buffer: int = 10_000        # records, before tokenizing

    def __post_init__(self):
        for field, pairs in (("rates", self.rates), ("caps", self.caps)):
            names = [k for k, _ in pairs]
            if sorted(names) != sorted(SUB_MIXTURES):
                raise ValueError(f"tasks.flan2022.{field} must name each sub-mixture of "
                                 f"{list(SUB_MIXTURES)} once, got {names}")
        for name, rate in self.rates:
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate >= 0:
                raise ValueError(f"tasks.flan2022.rates[{name!r}]={rate!r} must be a number "
                                 ">= 0 (0 leaves the sub-mixture out)")
        if not sum(r for _, r in self.rates) > 0:
            raise ValueError(f"tasks.flan2022.rates={dict(self.rates)}: at least one must be > 0")
        for name, cap in self.caps:
            require_int("tasks.flan2022", f"caps[{name!r}]", cap, 1,
                        meaning="examples kept per task_name")
        if not self.template_types:
            raise ValueError(f"tasks.flan2022.template_types is empty; valid: "
                             f"{list(TEMPLATE_TYPES)}")
        for name in ("validation_examples", "shuffle_buffer"):
            require_int("tasks.flan2022", name, getattr(self, name),
                        1 if name == "shuffle_buffer" else 0)

    def rate(self, sub_mixture: str) -> float:
        return float(dict(self.rates)[sub_mixture])

    def cap(self, sub_mixture: str) -> int:
        return dict(self.caps)[sub_mixture]


def _overrides(field: str, given, defaults: Mapping) -> tuple:
    if given is None:
        return tuple(defaults.items())
    if field == "caps" and isinstance(given, int) and not isinstance(given, bool):
        given = {name: given for name in defaults}
    if not isinstance(given, Mapping):
        raise ValueError(f"tasks.flan2022.{field}={given!r} must be a dict of sub-mixture -> "
                         f"value" + (" (or one int)" if field == "caps" else ""))
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"tasks.flan2022.{field} names unknown sub-mixture(s) {unknown}; "
                         f"valid: {list(defaults)}")
    return tuple({**defaults, **given}.items())


def flan2022(directory: str | None = None, rates=None, caps=None, template_types=None,
             validation_examples: int = 1000, shuffle_buffer: int = 10_000) -> Flan2022:
    """The Flan 2022 export to read and how to mix it (see the module docstring)."""
    if isinstance(template_types, str):
        template_types = [template_types]
    types = tuple(files_.template_type_of(t, "tasks.flan2022.template_types")
                  for t in (template_types if template_types is not None else TEMPLATE_TYPES))
    return Flan2022(directory or None, _overrides("rates", rates, RATES),
                    _overrides("caps", caps, CAPS), types, validation_examples, shuffle_buffer)


@functools.lru_cache(maxsize=256)
def _survey(path: str, size: int, mtime: float):
    return files_.survey([path])[path]


def shards(config: Flan2022, sub_mixture: str) -> list[str]:
    """The shards that may hold `sub_mixture`'s records; fails early if none can."""
    paths = files_.find_files(config.directory)
    held = {p: _survey(p, os.path.getsize(p), os.path.getmtime(p)) for p in paths}
    mine = [p for p in paths if held[p] is None or sub_mixture in held[p]]
    if not mine:
        present = sorted(set().union(*held.values()))
        raise ValueError(f"sub-mixture {sub_mixture!r} (rate {config.rate(sub_mixture)}) has no "
                         f"records in {config.directory!r}, whose task_sources are {present}; "
                         f"leave it out with tasks.flan2022.rates = {{'{sub_mixture}': 0}}")
    return mine


def examples(config: Flan2022, sub_mixture: str, split: str,
             paths: list[str]) -> Iterator[dict]:
    """The records of `sub_mixture` in `split`: the first validation_examples are the
    validation split; training keeps at most the cap of each task_name of the rest."""
    kept: collections.Counter = collections.Counter()
    held = seen = 0
    cap, wanted = config.cap(sub_mixture), set(config.template_types)
    filtering = wanted != set(TEMPLATE_TYPES)
    for where, r in files_.records(paths):
        if r.sub_mixture != sub_mixture:
            continue
        if r.template_type is None and filtering:
            raise ValueError(f"{where}: the record has no template_type, so "
                             f"tasks.flan2022.template_types={list(config.template_types)} "
                             "cannot select it; leave template_types at all four")
        if filtering and r.template_type not in wanted:
            continue
        seen += 1
        if held < config.validation_examples:
            held += 1
            if split == "validation":
                yield _dict(r)
                if held == config.validation_examples:
                    return
            continue
        if split == "validation":
            return
        if kept[r.task_name] < cap:
            kept[r.task_name] += 1
            yield _dict(r)
    if not (held if split == "validation" else sum(kept.values())):
        raise ValueError(
            f"sub-mixture {sub_mixture!r} has no {split} examples in {config.directory!r}: "
            f"{seen} records match task_source and template_types "
            f"{list(config.template_types)}, and the first "
            f"{config.validation_examples} are the validation split "
            "(tasks.flan2022.validation_examples); "
            f"leave it out with tasks.flan2022.rates = {{'{sub_mixture}': 0}}")


def _dict(r: files_.Record) -> dict:
    return {"inputs": r.inputs, "targets": r.targets, "task_name": r.task_name,
            "template_type": r.template_type or ""}


CHUNK = 256   # records per call into Python (from_generator's cost is per call)
SIGNATURE = {k: tf.TensorSpec((None,), tf.string) for k in FEATURES}


def _chunks(rows: Iterator[dict]) -> Iterator[dict]:
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield {k: [r[k] for r in chunk] for k in FEATURES}
            chunk = []
    if chunk:
        yield {k: [r[k] for r in chunk] for k in FEATURES}


def _dataset_fn(sub_mixture: str):
    def fn(split: str, shuffle_files: bool = False, seed: int | None = None):
        config = settings_scope.get("flan2022", Flan2022)
        if config.rate(sub_mixture) == 0:  # never sampled: read nothing
            return tf.data.Dataset.from_tensor_slices(
                {k: tf.constant([], tf.string) for k in FEATURES})
        if split == "validation" and not config.validation_examples:
            raise ValueError("tasks.flan2022.validation_examples=0 leaves no validation split; "
                             "hold some records out or set run.train.eval_feed = None")
        paths = shards(config, sub_mixture)   # missing files fail here, before training
        ds = tf.data.Dataset.from_generator(
            lambda: _chunks(examples(config, sub_mixture, split, paths)),
            output_signature=SIGNATURE).unbatch()
        return ds.shuffle(config.shuffle_buffer, seed=seed) if shuffle_files else ds
    return fn


def register(vocabulary) -> None:
    features = {"inputs": seqio.Feature(vocabulary, add_eos=True),
                "targets": seqio.Feature(vocabulary, add_eos=True)}
    for sub in SUB_MIXTURES:
        seqio.TaskRegistry.add(
            task_name(sub),
            source=seqio.FunctionDataSource(_dataset_fn(sub), splits=("train", "validation")),
            preprocessors=[seqio.preprocessors.tokenize,
                           seqio.preprocessors.append_eos_after_trim],
            output_features=features, metric_fns=[])
    seqio.MixtureRegistry.add(
        MIXTURE, [(task_name(sub), functools.partial(_rate, sub)) for sub in SUB_MIXTURES])


def _rate(sub_mixture: str, task=None) -> float:
    return settings_scope.get("flan2022", Flan2022).rate(sub_mixture)
