"""Dropless dispatch (MegaBlocks, Gale et al. 2022): no capacity, experts as one grouped matmul.

Within each routing group the S x k token choices are sorted by expert (stably, so an
expert's rows keep position order; padding sorts last and belongs to no expert), and
`jax.lax.ragged_dot`'s general form multiplies each expert's run of rows by that expert's
weights, the group being an outer dimension so a group never leaves its device. Outputs
are gathered back to (token, choice) and weighed by the gates. No token drops, so where
the einsum path's capacity drops nothing the two agree. The CPU lowering of a ragged dot
computes every expert for every row and masks (E x the FLOPs); TPUs and GPUs have grouped
matmul kernels.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

# rows [G, M, d] (ragged over M) x weights [E, d, f] -> [G, M, f]; group sizes [G, E]
RAGGED = jax.lax.RaggedDotDimensionNumbers(
    dot_dimension_numbers=(([2], [1]), ([], [])), lhs_ragged_dimensions=[1],
    rhs_group_dimensions=[0])


def sort_by_expert(x: jax.Array, expert_index: jax.Array, keep: jax.Array, num_experts: int):
    """(rows [G, S*k, d], group_sizes int32 [G, E], order [G, S*k]): the tokens of x
    [G, S, d] once per kept choice (`keep` [G, S, k]), sorted by expert; `order` is the
    flat choice (s * k + j) each row came from."""
    groups, tokens, k = expert_index.shape
    key = jnp.where(keep, expert_index, num_experts).reshape(groups, tokens * k)
    order = jnp.argsort(key, axis=1, stable=True)
    rows = jnp.take_along_axis(x, (order // k)[..., None], axis=1)
    sizes = jax.vmap(lambda e: jnp.zeros(num_experts, jnp.int32).at[e].add(1, mode="drop"))(key)
    return rows, sizes, order


def grouped_matmul(group_sizes: jax.Array) -> Callable:
    """`matmul(rows [G, M, d], w [E, d, f])` by expert runs of `group_sizes` [G, E]."""
    return lambda rows, w: jax.lax.ragged_dot_general(rows, w, group_sizes, RAGGED)


def unsort(ys: jax.Array, order: jax.Array, keep: jax.Array, gates: jax.Array) -> jax.Array:
    """[G, S, d]: expert outputs ys [G, S*k, d] (rows as `sort_by_expert` left them) back
    at their tokens, kept choices weighed by their gates and summed."""
    groups, tokens, k = gates.shape
    back = jnp.take_along_axis(ys, jnp.argsort(order, axis=1)[..., None], axis=1)
    back = back.reshape(groups, tokens, k, ys.shape[-1])
    back = jnp.where(keep[..., None], back, 0)  # rows of no expert hold no defined value
    return jnp.sum(back * gates[..., None].astype(ys.dtype), axis=2)
