"""Logical axis names on params and activations: the one place that knows the metadata key.

Every param is an `nnx.Param` whose metadata holds a tuple of logical axis names
(`vocab`, `embed`, `heads`, `kv`, `mlp`, `relpos_buckets`, `layers`, ...). We use our own
metadata key rather than Flax's sharding key (renamed twice upstream), so Flax never shards
eagerly: `partitioning` maps these names to mesh axes and params are placed through
`jax.jit(..., out_shardings=...)`.

Activations get hints through `constrain`, which is a no-op unless a caller (training)
installs a resolver from logical names to a sharding with `activation_rules`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

_KEY = "logical_axes"


@dataclasses.dataclass(frozen=True)
class LogicalAxes:
    """Logical names of one array's dimensions; a pytree leaf."""

    names: tuple[str | None, ...]

    def __iter__(self):
        return iter(self.names)

    def __len__(self):
        return len(self.names)


def param(rngs: nnx.Rngs, init: Callable, shape: tuple[int, ...], axes: tuple[str, ...],
          dtype=jnp.float32) -> nnx.Param:
    """An `nnx.Param` initialised by `init(key, shape, dtype)` and named by `axes`."""
    if len(axes) != len(shape):
        raise ValueError(f"param of shape {shape} got {len(axes)} logical axes {axes}")
    return nnx.Param(init(rngs.params(), shape, dtype), **{_KEY: tuple(axes)})


def axes_of(variable: nnx.Variable) -> tuple[str | None, ...]:
    """The logical axis names of one variable."""
    names = variable.get_metadata().get(_KEY)
    if names is None:
        raise ValueError(f"variable {type(variable).__name__} of shape "
                         f"{jnp.shape(variable.value)} has no logical axis names")
    return names


def with_leading_axis(variable: nnx.Variable, name: str, value) -> nnx.Variable:
    """`variable` holding `value` (one more leading dim) with `name` prepended to its axes."""
    return variable.replace(value=value, **{_KEY: (name,) + tuple(axes_of(variable))})


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def logical_axes(state) -> object:
    """A pytree like `nnx.to_pure_dict(state)` with a `LogicalAxes` leaf per array."""
    def plain(node):
        if isinstance(node, nnx.Variable):
            return LogicalAxes(axes_of(node))
        return {key: plain(child) for key, child in node.items()}

    return plain(state)


# Activation hints -----------------------------------------------------------------

_RULES: contextvars.ContextVar[Callable | None] = contextvars.ContextVar("t5pod_rules",
                                                                         default=None)


@contextlib.contextmanager
def activation_rules(resolve: Callable[[tuple[str | None, ...]], object]):
    """Within this context `constrain(x, names)` applies `resolve(names)` as a sharding."""
    token = _RULES.set(resolve)
    try:
        yield
    finally:
        _RULES.reset(token)


def constrain(x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
    """Hint that activation `x` is laid out by its logical `names` (no-op without rules)."""
    resolve = _RULES.get()
    if resolve is None:
        return x
    if len(names) != x.ndim:
        raise ValueError(f"activation of shape {x.shape} got {len(names)} logical axes {names}")
    return jax.lax.with_sharding_constraint(x, resolve(tuple(names)))


def in_use(weight: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
    """Hint that `weight` is used here whole along the data-parallel axes: FSDP gathers it
    (tensor/expert shards stay). For ops XLA would otherwise partition over a sharded
    weight, such as an embedding lookup (no-op without rules)."""
    resolve = _RULES.get()
    if resolve is None:
        return weight
    return jax.lax.with_sharding_constraint(weight, resolve(tuple(names), in_use=True))


def per_example(fn: Callable, *args):
    """`fn(*args)` run by each device on the examples it holds alone (`jax.shard_map` over the
    batch's mesh axes), for per-example work XLA would otherwise gather the batch for (e.g.
    `lax.top_k`). Arrays lead with the batch dim (scalars are passed whole), as do the
    results; without rules, or with the batch unsplit, just `fn(*args)`."""
    resolve = _RULES.get()
    batch = None if resolve is None else resolve(("batch",))
    if batch is None or batch.spec[0] is None:
        return fn(*args)
    split = jax.sharding.PartitionSpec(batch.spec[0])
    specs = tuple(split if jnp.ndim(a) else jax.sharding.PartitionSpec() for a in args)
    return jax.shard_map(fn, mesh=batch.mesh, in_specs=specs, out_specs=split)(*args)


def shard_count(names: tuple[str | None, ...], dim: int = 0) -> int:
    """How many shards `constrain(x, names)` cuts dimension `dim` of x into (1 without rules)."""
    resolve = _RULES.get()
    if resolve is None:
        return 1
    sharding = resolve(tuple(names))
    spec = tuple(sharding.spec) + (None,) * len(names)
    axes = spec[dim]
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    count = 1
    for axis in axes:
        count *= sharding.mesh.shape[axis]
    return count


def mesh_size() -> int:
    """Devices in the mesh the activation rules resolve to (1 without rules)."""
    resolve = _RULES.get()
    return 1 if resolve is None else resolve(("batch",)).mesh.size
