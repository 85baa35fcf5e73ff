"""Index dispatch: tokens reach their expert slots by gather, not by one-hot einsums.

The routing decisions are the einsum path's (`routing.*_slots`); only how tokens move
differs. Each expert slot [G, E, C] names the token of its group that fills it (S: empty);
dispatch gathers those tokens into [G, E, C, d] and the layer lays them out [E, G, C, d]
on the `expert` axis, so expert parallelism still moves them all-to-all. Tokens choose:
each token gathers its k slots' outputs back and weighs them by its gates (a dropped
choice reads zeros). Experts choose: a token may hold 0..E slots, so the weighted slot
outputs are scatter-added to their tokens. Gradients are JAX's transposes of these gathers
and scatters; no [G, S, E, C] tensor is built or multiplied.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def slot_tokens(expert_index: jax.Array, position: jax.Array, keep: jax.Array,
                num_experts: int, cap: int) -> jax.Array:
    """int32 [G, E, C]: the token filling each slot (S where empty), from tokens-choose
    decisions [G, S, k] (a choice not kept fills nothing)."""
    tokens, k = expert_index.shape[1:]
    token = jnp.broadcast_to(jnp.arange(tokens, dtype=jnp.int32)[:, None], (tokens, k))

    def group(e, c):
        empty = jnp.full((num_experts, cap), tokens, jnp.int32)
        return empty.at[e, c].set(token, mode="drop")  # slot `cap`: out of range, dropped

    return jax.vmap(group)(expert_index, jnp.where(keep, position, cap))


def gather_slots(x: jax.Array, slot_token: jax.Array) -> jax.Array:
    """[G, E, C, d]: each group's tokens x [G, S, d] in its slots (zeros where empty)."""
    return jax.vmap(lambda xg, t: xg.at[t].get(mode="fill", fill_value=0))(x, slot_token)


def gather_choices(ye: jax.Array, expert_index: jax.Array, position: jax.Array,
                   keep: jax.Array, gates: jax.Array) -> jax.Array:
    """[G, S, d]: each token's kept choices [G, S, k] read from the slot outputs ye
    [G, E, C, d], weighed by their gates and summed."""
    slot = jnp.where(keep, position, ye.shape[2])  # not kept: read the fill (zeros)
    picked = jax.vmap(lambda y, e, c: y.at[e, c].get(mode="fill", fill_value=0))(
        ye, expert_index, slot)                                               # [G,S,k,d]
    return jnp.sum(picked * gates[..., None].astype(ye.dtype), axis=2)


def scatter_slots(ye: jax.Array, slot_token: jax.Array, weight: jax.Array,
                  tokens: int) -> jax.Array:
    """[G, S, d]: slot outputs ye [G, E, C, d] weighed by `weight` [G, E, C] and added
    to the tokens that fill the slots (empty slots add nothing)."""
    weighted = ye * weight[..., None].astype(ye.dtype)

    def group(y, t):
        return jnp.zeros((tokens, y.shape[-1]), y.dtype).at[t].add(y, mode="drop")

    return jax.vmap(group)(weighted, slot_token)
