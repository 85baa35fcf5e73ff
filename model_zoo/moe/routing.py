"""MoE routing: which tokens each expert processes, and the router's auxiliary losses.

Shapes: G routing groups, S tokens per group, E experts, C expert capacity. A group is
a run of consecutive tokens of the batch (one sequence, several, or part of one; see
`moe_groups`). A routing is a `dispatch` mask [G, S, E, C] (token s fills slot c of expert
e) and `combine` weights of the same shape (the router probability on kept slots, 0
elsewhere); the `*_slots` functions return the decisions the masks are built from, which
index and dropless dispatch use directly. Everything here is float32 (selective
precision, Switch Transformer 2.4).
`valid` [G, S] (optional, True = a real token) keeps padding out: it takes no slot and
counts in no loss or metric (the losses' "flaxformer" padding counts it as zeros instead).

Tokens choose (Switch k=1, GShard/ST-MoE k=2): each token picks its top-k experts; an
expert keeps the first `capacity` tokens that picked it, ordered by position within the
group (all top-1 choices before any top-2 choice), or by the token's top router
probability with batch-prioritised routing (Riquelme et al. 2021). Overflow is dropped:
its combine weight is 0, so the MoE layer adds nothing and the residual carries the token.
Experts choose (Zhou et al. 2022): each expert takes its `capacity` highest-probability
tokens of the group; a token may get 0..E experts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def router_logits(x: jax.Array, kernel: jax.Array, jitter: float = 0.0,
                  rng: jax.Array | None = None) -> jax.Array:
    """float32 logits [G, S, E]; multiplicative jitter U(1-eps, 1+eps) on the input if `rng`."""
    x = x.astype(jnp.float32)
    if rng is not None and jitter > 0:
        x = x * jax.random.uniform(rng, x.shape, jnp.float32, 1.0 - jitter, 1.0 + jitter)
    return jnp.einsum("gsd,de->gse", x, kernel.astype(jnp.float32))


def _slots(expert_index, gates, keep, position, num_experts, cap):
    """dispatch/combine [G, S, E, C] from per-choice expert, gate, keep flag and slot."""
    onehot_e = jax.nn.one_hot(expert_index, num_experts, dtype=jnp.float32)   # [G,S,k,E]
    onehot_c = jax.nn.one_hot(jnp.where(keep, position, cap), cap, dtype=jnp.float32)
    dispatch = jnp.einsum("gske,gskc->gsec", onehot_e, onehot_c)
    combine = jnp.einsum("gske,gskc,gsk->gsec", onehot_e, onehot_c, gates)
    return dispatch, combine


def tokens_choose_slots(probs: jax.Array, k: int, cap: int, batch_prioritized: bool = False,
                        valid: jax.Array | None = None):
    """The tokens-choose decisions, each [G, S, k]: (expert_index, position, gates, keep).
    Choice j of token s goes to expert `expert_index` at slot `position` with router
    probability `gates` where `keep` (under capacity, and a real token)."""
    groups, tokens, num_experts = probs.shape
    gates, expert_index = jax.lax.top_k(probs, k)                            # [G,S,k]
    if batch_prioritized:  # rank tokens by their top probability, highest first
        order = jnp.argsort(-gates[..., 0], axis=1, stable=True)             # [G,S]
    else:
        order = jnp.broadcast_to(jnp.arange(tokens), (groups, tokens))
    ranked = jnp.take_along_axis(expert_index, order[..., None], axis=1)
    # priority: all first choices (in rank order), then all second choices, ...
    mask = jax.nn.one_hot(jnp.swapaxes(ranked, 1, 2), num_experts, dtype=jnp.int32)
    if valid is not None:  # padding claims no slot
        mask = mask * jnp.take_along_axis(valid, order, axis=1)[:, None, :, None]
    mask = mask.reshape(groups, k * tokens, num_experts)                     # [G,kS,E]
    position = jnp.sum((jnp.cumsum(mask, axis=1) - 1) * mask, axis=-1)       # [G,kS]
    position = jnp.swapaxes(position.reshape(groups, k, tokens), 1, 2)       # [G,S(rank),k]
    unrank = jnp.argsort(order, axis=1)
    position = jnp.take_along_axis(position, unrank[..., None], axis=1)      # [G,S,k]
    keep = position < cap if valid is None else (position < cap) & valid[..., None]
    return expert_index, position, gates, keep


def tokens_choose(probs: jax.Array, k: int, cap: int, batch_prioritized: bool = False,
                  valid: jax.Array | None = None):
    """(dispatch, combine, expert_index [G, S, k]) for top-k tokens-choose routing."""
    expert_index, position, gates, keep = tokens_choose_slots(probs, k, cap,
                                                              batch_prioritized, valid)
    dispatch, combine = _slots(expert_index, gates, keep, position, probs.shape[-1], cap)
    return dispatch, combine, expert_index


def experts_choose_slots(probs: jax.Array, cap: int, valid: jax.Array | None = None):
    """The experts-choose decisions, each [G, E, C]: (token_index, gates, filled). Slot c
    of expert e takes token `token_index` with router probability `gates`; a slot padding
    got is not `filled` (its gate is 0)."""
    if valid is not None:  # padding ranks last, and a slot it gets stays empty
        probs = jnp.where(valid[..., None], probs, -1.0)
    gates, token_index = jax.lax.top_k(jnp.swapaxes(probs, 1, 2), cap)      # [G,E,C]
    if valid is None:
        return token_index, gates, jnp.ones(gates.shape, bool)
    return token_index, jnp.maximum(gates, 0.0), gates >= 0.0


def experts_choose(probs: jax.Array, cap: int, valid: jax.Array | None = None):
    """(dispatch, combine) where each expert takes its `cap` most probable tokens."""
    tokens = probs.shape[1]
    token_index, gates, _ = experts_choose_slots(probs, cap, valid)
    dispatch = jnp.einsum("gecs->gsec", jax.nn.one_hot(token_index, tokens, dtype=jnp.float32))
    if valid is not None:
        dispatch = dispatch * valid[..., None, None]
    return dispatch, dispatch * gates[:, None, :, :]


def _weights(x: jax.Array, valid: jax.Array | None) -> jax.Array:
    """float32 [G, S] token weights: 1 for real tokens (all tokens without `valid`)."""
    return jnp.ones(x.shape[:2], jnp.float32) if valid is None else valid.astype(jnp.float32)


def load_balancing_loss(probs: jax.Array, expert_index: jax.Array,
                        valid: jax.Array | None = None, padding: str = "excluded") -> jax.Array:
    """Switch eq. 4 per group, averaged: E * sum_e f_e P_e (1 when perfectly balanced).

    f_e: fraction of the group's tokens that chose expert e (any of their k choices, before
    capacity); P_e: mean router probability of expert e. With `valid` and padding
    "excluded", over real tokens only, and the mean over groups that hold any; with
    "flaxformer", padding's choices and probabilities count as 0 and every mean is over all
    tokens and groups.
    """
    num_experts = probs.shape[-1]
    w = _weights(probs, valid)
    chose = jnp.max(jax.nn.one_hot(expert_index, num_experts, dtype=jnp.float32), axis=-2)
    f = jnp.einsum("gse,gs->ge", chose, w)
    p = jnp.einsum("gse,gs->ge", probs, w)
    if padding == "flaxformer":
        return jnp.mean(jnp.sum(f * p, axis=-1)) * num_experts / probs.shape[1] ** 2
    count = jnp.sum(w, axis=1)                                               # [G]
    per_group = jnp.sum(f * p, axis=-1) * num_experts / jnp.maximum(count, 1.0) ** 2
    filled = (count > 0).astype(jnp.float32)
    return jnp.sum(per_group * filled) / jnp.maximum(jnp.sum(filled), 1.0)


def router_z_loss(logits: jax.Array, valid: jax.Array | None = None,
                  padding: str = "excluded") -> jax.Array:
    """ST-MoE eq. 5: mean over (real) tokens of logsumexp(logits)^2. With `valid` and padding
    "flaxformer", padding's logits count as 0 (log(E)^2 each) in a mean over all tokens."""
    w = _weights(logits, valid)
    if padding == "flaxformer":
        return jnp.mean(jnp.square(jax.nn.logsumexp(logits * w[..., None], axis=-1)))
    z = jnp.square(jax.nn.logsumexp(logits, axis=-1))
    return jnp.sum(z * w) / jnp.maximum(jnp.sum(w), 1.0)


def load_metrics(processed: jax.Array, load: jax.Array, valid: jax.Array | None = None) -> dict:
    """Fraction of (real) tokens no expert processes (`processed` [G, S] False), and expert
    load (`load` [E]: slots filled; 1 = even share) min/max and entropy (nats; log E when
    even). Padding takes no slot, so load counts real tokens only when it is excluded from
    routing."""
    num_experts = load.shape[0]
    w = _weights(processed, valid)
    share = load / jnp.maximum(jnp.sum(load), 1.0)
    entropy = -jnp.sum(jnp.where(share > 0, share * jnp.log(jnp.maximum(share, 1e-30)), 0.0))
    dropped = jnp.sum((~processed).astype(jnp.float32) * w) / jnp.maximum(jnp.sum(w), 1.0)
    return {"dropped_fraction": dropped,
            "expert_load_min": jnp.min(share) * num_experts,
            "expert_load_max": jnp.max(share) * num_experts,
            "expert_load_entropy": entropy}
