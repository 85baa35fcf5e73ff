"""Flan 2022's mixing inside a sub-mixture (google-research/FLAN, flan/v2/mixtures*.py), for
an export holding every example (`tasks.flan2022.mixing = 'flan_rule'`).

Flan samples a (task, template type) group g of sub-mixture S at

    P(g | S) = W[t] * V[k] * min(cap_S, n_g) / sum over g' of type t and kind k of
               min(cap_S, n_g')

n_g: g's examples; t: its template type, weighted W (Flan 2021 and T0: zs_opt, fs_opt,
zs_noopt, fs_noopt a quarter each; NIv2, CoT, Dialog: zs_opt and fs_opt half each);
k: CoT-II / Dialog-II (task names ending `_ii`) at V = 0.3 beside 1 for the rest of CoT and
Dialog. W and V are renormalised over the types and kinds the export (and
tasks.flan2022.template_types) holds.

One stream of records reproduces these rates by thinning: a record of g is kept with
probability a_g = (P(g|S) / n_g) / max over g' of (P(g'|S) / n_g'), drawn afresh each epoch,
so a capped task contributes its capped share while all its examples take turns, as in
Flan's seqio mixture (a cap there is a rate, not a truncation).
"""

from __future__ import annotations

import collections
import hashlib
from typing import Mapping

QUARTERS = {"zs_opt": 0.25, "fs_opt": 0.25, "zs_noopt": 0.25, "fs_noopt": 0.25}
HALVES = {"zs_opt": 0.5, "fs_opt": 0.5}
TEMPLATE_WEIGHTS = {"flan": QUARTERS, "t0": QUARTERS, "niv2": HALVES, "cot": HALVES,
                    "dialog": HALVES}
II_SUFFIX, II_WEIGHT = "_ii", 0.3
II_SUB_MIXTURES = ("cot", "dialog")

Group = tuple[str, str]   # (task_name, template_type)


def kind(sub_mixture: str, task_name: str) -> str:
    """'ii' for CoT-II / Dialog-II tasks, else 'main'."""
    ii = sub_mixture in II_SUB_MIXTURES and task_name.endswith(II_SUFFIX)
    return "ii" if ii else "main"


def rates(sub_mixture: str, counts: Mapping[Group, int], cap: int) -> dict[Group, float]:
    """P(g | S) of every group with a positive template weight (see the module docstring)."""
    weights = TEMPLATE_WEIGHTS[sub_mixture]
    kinds = {"main": 1.0, "ii": II_WEIGHT}
    capped = {g: min(cap, n) for g, n in counts.items() if weights.get(g[1], 0) > 0 and n > 0}
    totals: collections.Counter = collections.Counter()
    for (name, template), m in capped.items():
        totals[template, kind(sub_mixture, name)] += m
    types = {t for t, _ in totals}
    type_sum = sum(weights[t] for t in types)
    out = {}
    for (name, template), m in capped.items():
        k = kind(sub_mixture, name)
        kind_sum = sum(kinds[j] for t, j in totals if t == template)
        out[name, template] = (weights[template] / type_sum) * (kinds[k] / kind_sum) * (
            m / totals[template, k])
    return out


def keep_probabilities(rates_: Mapping[Group, float],
                       counts: Mapping[Group, int]) -> dict[Group, float]:
    """a_g: the probability a record of g is kept in an epoch, the largest 1."""
    per_record = {g: p / counts[g] for g, p in rates_.items()}
    top = max(per_record.values(), default=1.0)
    return {g: v / top for g, v in per_record.items()}


def uniform(digest: bytes, seed: int, epoch: int) -> float:
    """A number in [0, 1) fixed by a record's digest, the seed and the epoch (so every host
    keeps the same records)."""
    h = hashlib.blake2b(digest + (int(seed) % 2 ** 64).to_bytes(8, "little")
                        + int(epoch).to_bytes(8, "little"), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0 ** 64
