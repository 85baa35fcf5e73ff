"""The Flan 2022 collection (Longpre et al. 2023) as seqio tasks, from its exported files.

One seqio Task per sub-mixture: `flan2022_flan` (Flan 2021), `flan2022_t0` (T0/P3),
`flan2022_niv2` (Super-Natural Instructions), `flan2022_cot` (chain of thought) and
`flan2022_dialog`, each streaming the records of the export whose `task_source` names it
(tasks/flan2022/flan_collection_files.py); the Mixture `flan2022` samples them at the paper's rates,
0.4 / 0.32 / 0.2 / 0.05 / 0.03.

Inside a sub-mixture, `tasks.flan2022.mixing`:
  'as_exported' (default)  every record once per epoch: the `*_submix_original` exports were
                           drawn from Flan's sub-mixtures, so their caps, template-type
                           weights and CoT-II/Dialog-II share are in them already
  'flan_rule'              Flan's rule applied here (tasks/flan2022/flan_rule.py): each (task_name,
                           template_type) at min(cap, n), template types and CoT-II/Dialog-II
                           weighted as Flan's mixtures; for an export of every example, or to
                           re-cap a submix export (`caps`: Flan's 30k / 20k / 5k / 100k / 200k)

Why per sub-mixture and not per task_name: seqio tasks are registered when `tasks` is
imported, before gin names a directory, and the collection has about 1,800 task_names; a
seqio Mixture over that many would build as many tf.data pipelines and shuffle buffers.

The validation split is the records whose hash (of task_name, template_type, inputs and
targets) falls below `validation_fraction`: the same records whatever the order or sharding
of the files, and a duplicate is never on both sides. Records are read in sorted file order;
order within training comes from a `shuffle_buffer` of records, then seqio's shuffle. Each
host reads every shard and keeps its share (seqio shards a FunctionDataSource by example).

    tasks.flan2022.directory = %FLAN2022_DIR
    tasks.flan2022.rates = {'niv2': 0.0}          # overrides; sub-mixtures not named keep theirs
    tasks.flan2022.mixing = 'flan_rule'
    tasks.flan2022.caps = {'niv2': 5000}          # or one int; only with mixing='flan_rule'
    tasks.flan2022.template_types = ['zs_opt', 'fs_opt']
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import itertools
import os
from typing import Iterator, Mapping

import seqio

from fields import paths
from fields.choices import require_choice
from fields.integers import require_int
from tasks.flan2022 import flan_collection_files as files_
from tasks.flan2022 import flan_rule
from tasks import settings_scope
from tasks.flan2022.flan_collection_files import SUB_MIXTURES, TEMPLATE_TYPES
from tasks.tf_setup import tf

RATES = {"flan": 0.4, "t0": 0.32, "niv2": 0.2, "cot": 0.05, "dialog": 0.03}
CAPS = {"flan": 30_000, "t0": 20_000, "niv2": 5_000, "cot": 100_000, "dialog": 200_000}
MIXINGS = ("as_exported", "flan_rule")
MIXTURE = "flan2022"
FEATURES = ("inputs", "targets", "task_name", "template_type")


def task_name(sub_mixture: str) -> str:
    return f"{MIXTURE}_{sub_mixture}"


@dataclasses.dataclass(frozen=True)
class Flan2022:
    directory: str | None = None
    rates: tuple[tuple[str, float], ...] = tuple(RATES.items())
    mixing: str = "as_exported"
    caps: tuple[tuple[str, int], ...] = tuple(CAPS.items())   # read by 'flan_rule' only
    template_types: tuple[str, ...] = TEMPLATE_TYPES
    validation_fraction: float = 0.001   # of each sub-mixture, by hash; never trained on
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
        require_choice("tasks.flan2022", "mixing", self.mixing, MIXINGS)
        for name, cap in self.caps:
            require_int("tasks.flan2022", f"caps[{name!r}]", cap, 1,
                        meaning="Flan's rate of a task and template type is min(n, cap)")
        if not self.template_types:
            raise ValueError(f"tasks.flan2022.template_types is empty; valid: "
                             f"{list(TEMPLATE_TYPES)}")
        f = self.validation_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise ValueError(f"tasks.flan2022.validation_fraction={f!r} must be a number in "
                             "[0, 1) (0: no validation split)")
        require_int("tasks.flan2022", "shuffle_buffer", self.shuffle_buffer, 1)

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


def flan2022(directory: str | None = None, rates=None, mixing: str = "as_exported", caps=None,
             template_types=None, validation_fraction: float = 0.001,
             shuffle_buffer: int = 10_000) -> Flan2022:
    """The Flan 2022 export to read and how to mix it (see the module docstring)."""
    if caps is not None and mixing != "flan_rule":
        raise ValueError(f"tasks.flan2022.caps={caps!r} is read only with tasks.flan2022.mixing"
                         f"='flan_rule' (mixing={mixing!r} uses the export's records as they "
                         "are: the submix exports are capped already)")
    if isinstance(template_types, str):
        template_types = [template_types]
    types = tuple(files_.template_type_of(t, "tasks.flan2022.template_types")
                  for t in (template_types if template_types is not None else TEMPLATE_TYPES))
    return Flan2022(directory or None, _overrides("rates", rates, RATES), mixing,
                    _overrides("caps", caps, CAPS), types, validation_fraction, shuffle_buffer)


def _stamp(files: list[str]) -> tuple:
    """What identifies the shards' contents for the caches below: local files by size and
    modification time, bucket objects by size (a rewrite under the same name and size on a
    bucket is not seen within one process)."""
    return tuple((p, paths.getsize(p), 0.0 if paths.is_bucket(p) else os.path.getmtime(p))
                 for p in files)


@functools.lru_cache(maxsize=256)
def _survey(path: str, size: int, mtime: float):
    return files_.survey([path])[path]


def shards(config: Flan2022, sub_mixture: str) -> list[str]:
    """The shards that may hold `sub_mixture`'s records; fails early if none can."""
    paths = files_.find_files(config.directory)
    held = {p: _survey(*stamp) for p, stamp in zip(paths, _stamp(paths), strict=True)}
    mine = [p for p in paths if held[p] is None or sub_mixture in held[p]]
    if not mine:
        present = sorted(set().union(*held.values()))
        raise ValueError(f"sub-mixture {sub_mixture!r} (rate {config.rate(sub_mixture)}) has no "
                         f"records in {config.directory!r}, whose task_sources are {present}; "
                         f"leave it out with tasks.flan2022.rates = {{'{sub_mixture}': 0}}")
    return mine


def digest(r: files_.Record) -> bytes:
    """A record's identity: a hash of its task_name, template_type, inputs and targets."""
    fields = (r.task_name, r.template_type or "", r.inputs, r.targets)
    return hashlib.blake2b("\x1f".join(fields).encode(), digest_size=16).digest()


def is_validation(config: Flan2022, record_digest: bytes) -> bool:
    return int.from_bytes(record_digest[:8], "little") / 2.0 ** 64 < config.validation_fraction


def _selected(config: Flan2022, sub_mixture: str, paths: list[str]):
    """(where, record) of `sub_mixture` with a selected template type."""
    wanted = set(config.template_types)
    filtering = wanted != set(TEMPLATE_TYPES)
    for where, r in files_.records(paths):
        if r.sub_mixture != sub_mixture:
            continue
        if r.template_type is None and (filtering or config.mixing == "flan_rule"):
            why = (f"tasks.flan2022.template_types={list(config.template_types)} cannot "
                   "select it; leave template_types at all four" if filtering else
                   "tasks.flan2022.mixing='flan_rule' weights records by it; use "
                   "mixing='as_exported'")
            raise ValueError(f"{where}: the record has no template_type, so {why}")
        if r.template_type in wanted or not filtering:
            yield where, r


@functools.lru_cache(maxsize=16)
def _counts(config: Flan2022, sub_mixture: str, stamp: tuple) -> dict:
    """{(task_name, template_type): records} of the selected records (validation included)."""
    paths = [p for p, _, _ in stamp]
    return dict(collections.Counter((r.task_name, r.template_type)
                                    for _, r in _selected(config, sub_mixture, paths)))


def keep_probabilities(config: Flan2022, sub_mixture: str, paths: list[str]) -> dict:
    """Flan's rule as a probability of keeping each group's records (flan_rule.py)."""
    counts = _counts(config, sub_mixture, _stamp(paths))
    return flan_rule.keep_probabilities(
        flan_rule.rates(sub_mixture, counts, config.cap(sub_mixture)), counts)


def examples(config: Flan2022, sub_mixture: str, split: str, paths: list[str],
             epoch: int = 0, seed: int = 0) -> Iterator[dict]:
    """The records of `sub_mixture` in `split` (by `is_validation`); with 'flan_rule' those
    its thinning keeps in `epoch` (validation: always epoch 0's, a fixed set)."""
    keep = (keep_probabilities(config, sub_mixture, paths) if config.mixing == "flan_rule"
            else None)
    epoch = 0 if split == "validation" else epoch
    found = seen = 0
    for _, r in _selected(config, sub_mixture, paths):
        seen += 1
        d = digest(r)
        if is_validation(config, d) != (split == "validation"):
            continue
        if keep is not None and not flan_rule.uniform(d, seed, epoch) < keep.get(
                (r.task_name, r.template_type), 0.0):
            continue
        found += 1
        yield _dict(r)
    if not found:
        raise ValueError(
            f"sub-mixture {sub_mixture!r} has no {split} examples in {config.directory!r}: "
            f"{seen} records match task_source and template_types "
            f"{list(config.template_types)}, of which a fraction "
            f"{config.validation_fraction} (tasks.flan2022.validation_fraction, by hash) is "
            f"the validation split; leave it out with tasks.flan2022.rates = "
            f"{{'{sub_mixture}': 0}}")


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
        if split == "validation" and not config.validation_fraction:
            raise ValueError("tasks.flan2022.validation_fraction=0 leaves no validation split; "
                             "hold some records out or set run.train.eval_feed = None")
        paths = shards(config, sub_mixture)   # missing files fail here, before training
        if config.mixing == "flan_rule":
            keep_probabilities(config, sub_mixture, paths)   # counts every group now
        epochs = itertools.count()   # from_generator calls the lambda once per epoch
        ds = tf.data.Dataset.from_generator(
            lambda: _chunks(examples(config, sub_mixture, split, paths, next(epochs),
                                     seed or 0)),
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
