"""Shardings derived from logical axis names and a rule set, and the sufficient-sharding check."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from partitioning.mesh import mesh_shape
from partitioning.rules import Rules, in_use_rules, resolve, validate_rules

MODEL_AXES = ("fsdp", "tensor", "expert")


def _is_names(x) -> bool:
    """Leaves of a logical-axes tree: tuples of names or objects iterating over names."""
    return isinstance(x, tuple) or (hasattr(x, "names") and not isinstance(x, dict))


def tree_specs(logical, shapes, rules: Rules, mesh: Mesh):
    """PartitionSpecs for a tree of logical names and a matching tree of arrays/shapes."""
    validate_rules(rules, mesh.axis_names)
    ms = mesh_shape(mesh)
    return jax.tree.map(lambda names, x: resolve(tuple(names), rules, ms, np.shape(x)),
                        logical, shapes, is_leaf=_is_names)


def tree_shardings(logical, shapes, rules: Rules, mesh: Mesh):
    return jax.tree.map(lambda spec: NamedSharding(mesh, spec),
                        tree_specs(logical, shapes, rules, mesh),
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(rules: Rules, mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a [batch, ...] input array: batch as the rules say, the rest replicated."""
    spec = resolve(("batch",), rules, mesh_shape(mesh))
    return NamedSharding(mesh, PartitionSpec(*spec, *([None] * (ndim - 1))))


def process_rows(sharding: NamedSharding, global_batch: int) -> slice:
    """The rows of a [global_batch, ...] array that this process's devices hold.

    What a host must feed `jax.make_array_from_process_local_data` when every host slices
    one global batch (tests, synthetic data); a host's rows must be one contiguous block.
    """
    index = sharding.addressable_devices_indices_map((global_batch,))
    rows = sorted({(i[0].start or 0, global_batch if i[0].stop is None else i[0].stop)
                   for i in index.values()})
    start, stop = rows[0][0], rows[-1][1]
    covered = sum(b - a for a, b in rows)
    if covered != stop - start:
        raise ValueError(f"process {jax.process_index()} holds rows {rows} of the batch, not one "
                         "contiguous block; order the mesh so each host's devices are adjacent "
                         "along the batch axes")
    return slice(start, stop)


def data_parallel_degree(rules: Rules, mesh: Mesh) -> int:
    """How many ways the batch dimension is split."""
    spec = resolve(("batch",), rules, mesh_shape(mesh))[0]
    axes = () if spec is None else (spec,) if isinstance(spec, str) else spec
    return int(np.prod([mesh_shape(mesh)[a] for a in axes]))


def activation_resolver(rules: Rules, mesh: Mesh) -> Callable:
    """(names, in_use=False) -> NamedSharding, for `model_zoo.axes.activation_rules`.

    With `in_use`, for a weight at its point of use (`in_use_rules`: gathered over fsdp).
    """
    validate_rules(rules, mesh.axis_names)
    ms = mesh_shape(mesh)
    weights = in_use_rules(rules)
    return lambda names, in_use=False: NamedSharding(
        mesh, resolve(names, weights if in_use else rules, ms))


def check_sufficient_sharding(logical, shapes, rules: Rules, mesh: Mesh,
                              max_replicated_fraction: float = 0.25) -> float:
    """Refuse rules that leave over `max_replicated_fraction` of param bytes replicated.

    Applies when the mesh has model-parallel axes (fsdp, tensor, expert) of size > 1, where
    replication wastes memory the user asked to save. Returns the replicated fraction.
    """
    ms = mesh_shape(mesh)
    if all(ms.get(a, 1) == 1 for a in MODEL_AXES):
        return 0.0
    specs = tree_specs(logical, shapes, rules, mesh)
    sizes = jax.tree.map(lambda x: int(np.prod(np.shape(x))) * np.dtype(x.dtype).itemsize, shapes)
    flat_specs = jax.tree_util.tree_flatten_with_path(
        specs, is_leaf=lambda x: isinstance(x, PartitionSpec))[0]
    flat_sizes = jax.tree.leaves(sizes)
    total = sum(flat_sizes)
    replicated = [(jax.tree_util.keystr(p), n)
                  for (p, s), n in zip(flat_specs, flat_sizes, strict=True)
                  if all(a is None for a in s)]
    fraction = sum(n for _, n in replicated) / max(total, 1)
    if fraction > max_replicated_fraction:
        largest = sorted(replicated, key=lambda x: -x[1])[:5]
        raise ValueError(
            f"{fraction:.0%} of parameter bytes stay replicated on mesh {ms} (limit "
            f"{max_replicated_fraction:.0%}); largest replicated params: {largest}. Use a rule "
            "set that shards them (fsdp, tensor, fsdp_tensor) or raise max_replicated_fraction.")
    return fraction


def check_expert_divisibility(logical, shapes, rules: Rules, mesh: Mesh) -> None:
    """Refuse params whose `expert` dim (num_experts) the rules put on a mesh axis that does
    not divide it (the resolver would silently replicate the experts instead)."""
    ms = mesh_shape(mesh)
    flat_names = jax.tree.leaves(logical, is_leaf=_is_names)
    for names, x in zip(flat_names, jax.tree.leaves(shapes), strict=True):
        for dim, name in enumerate(tuple(names)):
            if name != "expert":
                continue
            for logical_name, target in rules:
                axes = [a for a in ((target,) if isinstance(target, str) else target or ())
                        if ms.get(a, 1) > 1]
                if logical_name != "expert" or not axes:
                    continue
                size = int(np.prod([ms[a] for a in axes]))
                if np.shape(x)[dim] % size:
                    raise ValueError(
                        f"num_experts={np.shape(x)[dim]} is not divisible by the size {size} of "
                        f"mesh axes {tuple(axes)} that the rules shard experts on (mesh {ms}); "
                        f"use a multiple of {size} experts or a smaller expert axis")
                break
