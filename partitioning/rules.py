"""Logical-to-mesh axis rules: ordered tables resolved first-match-wins.

A rule set is a tuple of `(logical_name, mesh_axes)` pairs, where mesh_axes is one mesh
axis, a tuple of them (sharded over their product) or None (replicate). For each dimension
the resolver takes the FIRST rule for its logical name whose mesh axes are all unused so
far in the spec and divide the dimension; size-1 mesh axes are dropped, and a rule left
with no axes falls through to the next one. A name no rule mentions is an error.
"""

from __future__ import annotations

from typing import Sequence

from jax.sharding import PartitionSpec

from fields.choices import require_choice
from partitioning.mesh import AXES

Rules = tuple[tuple[str, object], ...]

# Batch over every data-like axis; where `expert` already holds a dim (an MoE layer's
# expert-dispatched activations [expert, batch, ...]), over the other two.
_BATCH = ("batch", ("data", "fsdp", "expert")), ("batch", ("data", "fsdp"))
_COMMON = (("length", None), ("kv", None), ("relpos_buckets", None), ("layers", None),
           ("branch", None))  # a TreeDNN branch: replicated, each device holds every branch

DATA_PARALLEL: Rules = (*_BATCH, ("embed", None), ("heads", None), ("mlp", None),
                        ("vocab", None), ("expert", None)) + _COMMON
# ZeRO-3: every large param sharded on fsdp along its first shardable dim.
FSDP: Rules = (*_BATCH, ("embed", "fsdp"), ("mlp", "fsdp"), ("vocab", "fsdp"),
               ("embed", None), ("mlp", None), ("vocab", None), ("heads", "fsdp"),
               ("heads", None), ("expert", None)) + _COMMON
# Megatron: attention heads and MLP hidden units split over `tensor`.
TENSOR: Rules = (*_BATCH, ("heads", "tensor"), ("mlp", "tensor"), ("vocab", "tensor"),
                 ("heads", None), ("mlp", None), ("vocab", None), ("embed", None),
                 ("expert", None)) + _COMMON
# 2-D: FSDP on embed plus tensor on heads/mlp/vocab.
FSDP_TENSOR: Rules = (*_BATCH, ("heads", "tensor"), ("mlp", "tensor"), ("vocab", "tensor"),
                      ("embed", "fsdp"), ("heads", None), ("mlp", None), ("vocab", None),
                      ("embed", None), ("expert", None)) + _COMMON
# Expert parallelism: experts over `expert`, the rest as in FSDP_TENSOR.
EXPERT: Rules = (("expert", "expert"), ("expert", None)) + FSDP_TENSOR

RULE_SETS: dict[str, Rules] = {
    "data_parallel": DATA_PARALLEL, "fsdp": FSDP, "tensor": TENSOR,
    "fsdp_tensor": FSDP_TENSOR, "expert": EXPERT,
}


def rule_set(name: str | Rules) -> Rules:
    """A named rule set, or a user's own table (validated for shape here, axes later)."""
    if not isinstance(name, str):
        table = tuple(tuple(rule) for rule in name)
        if any(len(rule) != 2 for rule in table):
            raise ValueError(f"rules must be (logical_name, mesh_axes) pairs; got {name!r}")
        return table
    require_choice("", "rules", name, RULE_SETS,
                   meaning="a named rule set, or (logical_name, mesh_axes) pairs")
    return RULE_SETS[name]


def _as_tuple(mesh_axes) -> tuple[str, ...]:
    if mesh_axes is None:
        return ()
    return (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)


# Mesh axes a weight is gathered over before each use (FSDP/ZeRO-3); tensor and expert
# shards of a weight stay put while it is used.
GATHERED_FOR_USE = ("data", "fsdp")


def in_use_rules(rules: Rules) -> Rules:
    """The rules for a weight while it is used: `rules` without the GATHERED_FOR_USE axes."""
    out = []
    for logical, target in rules:
        kept = tuple(a for a in _as_tuple(target) if a not in GATHERED_FOR_USE)
        out.append((logical, None if not kept else kept[0] if len(kept) == 1 else kept))
    return tuple(out)


def validate_rules(rules: Rules, mesh_axes: Sequence[str] = AXES) -> None:
    """Refuse rules that name mesh axes the mesh does not have."""
    for logical, target in rules:
        if not isinstance(logical, str):
            raise ValueError(f"rule {(logical, target)}: logical name must be a string")
        unknown = [a for a in _as_tuple(target) if a not in mesh_axes]
        if unknown:
            raise ValueError(f"rule ({logical!r}, {target!r}) names mesh axes {unknown} that "
                             f"do not exist; mesh axes are {tuple(mesh_axes)}")


def resolve(names: Sequence[str | None], rules: Rules, mesh_shape: dict[str, int],
            shape: Sequence[int] | None = None) -> PartitionSpec:
    """The PartitionSpec for an array whose dims have logical `names` (and optional `shape`)."""
    known = {logical for logical, _ in rules}
    unknown = [n for n in names if n is not None and n not in known]
    if unknown:
        raise ValueError(f"logical axes {unknown} have no rule; rules cover {sorted(known)}")
    used: set[str] = set()
    spec = []
    for dim, name in enumerate(names):
        chosen = None
        for logical, target in rules if name is not None else ():
            if logical != name:
                continue
            axes = tuple(a for a in _as_tuple(target) if mesh_shape.get(a, 1) > 1)
            if target is not None and not axes:
                continue  # only size-1 axes: fall through to the next rule
            if used & set(axes):
                continue
            size = 1
            for a in axes:
                size *= mesh_shape[a]
            if shape is not None and shape[dim] % size:
                continue
            chosen = axes
            break
        if chosen:
            used.update(chosen)
            spec.append(chosen[0] if len(chosen) == 1 else chosen)
        else:
            spec.append(None)
    return PartitionSpec(*spec)
