"""The mixture-of-experts feed-forward layer: fp32 router, dispatch, experts, combine.

Tokens [B, S, d] are regrouped into G routing groups [G, S_g, d] of consecutive tokens by
`moe_groups` (with `MoEConfig.group_size`: flaxformer's rule, the batch padded first when its
tokens do not divide; without: one sequence each), G a multiple of the batch's shard count
so that a group never spans devices: the regrouping is local and the group axis keeps the
`batch` sharding. One decoding step (S = 1) keeps one group per row, so decoding never
drops. Groups are dispatched to an [E, G, C, d] tensor whose sharding hint puts experts on
the `expert` logical axis and the groups on the remaining batch axes, so with expert
parallelism XLA moves tokens between devices all-to-all; the experts' weights [E, ...] are
sharded on `expert` too. `MoEConfig.dispatch` says how tokens reach it: by one-hot einsums
(the reference, as flaxformer), by gather (`dispatch_index`), or, with no capacity, sorted
by expert into a grouped matmul (`dispatch_dropless`). Gradients are JAX's, through the
same ops, so nothing needs rescaling by hand. With `ignore_padding_tokens`, the stack's
token mask (and the layer's own padding) keeps padding out of routing (no slot), the router
losses (or, with `router_loss_padding="flaxformer"`, counts it as zeros) and the metrics.

Against flaxformer's MoeLayer with its t5x configs (checked in tests/test_moe_flaxformer.py):
the same groups, padding, capacity, BPR and losses. Differences: a decoding step is routed
a row per group; expert replicas come from the mesh the activation rules resolve to, where
flaxformer divides `jax.device_count()`.

Against HF SwitchTransformers (checked in tests/test_moe_hf.py, which reads HF's settings:
`group_size=None`, padding routed, `router_loss_reduction="stacks_sum"`): same routing
groups (a sequence), position priority, drops (a dropped token's MoE output is 0), router
logits and z-loss. Differences: (1) capacity comes from factors (ceil(cf * S / E), HF takes
a fixed `expert_capacity`, which `MoEConfig.expert_capacity` reproduces); (2) with several
MoE layers in a stack the balancing loss is the mean of the per-layer Switch losses, where
HF pools all layers' tokens before multiplying f and P (equal with one MoE layer per
stack); (3) jitter multiplies the router's input only (HF's in-place multiply also reaches
the experts' input in float32 training).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from model_zoo.moe import dispatch_dropless, dispatch_index, moe_groups, routing
from model_zoo.axes import constrain, mesh_size, param, shard_count
from model_zoo.config import ModelConfig
from model_zoo.dropout import fold
from model_zoo.ffn import feed_forward, projection_names

EXPERT_AXES = ("expert", "batch", "length", "embed")
HIDDEN_AXES = ("expert", "batch", "length", "mlp")
SLOT_AXES = ("batch", "expert", "length", "embed")  # [G, E, C, d] on the groups' devices


class MoEFeedForward(nnx.Module):
    def __init__(self, cfg: ModelConfig, side: str, rngs: nnx.Rngs):
        """The MoE feed-forward of the `side` ("encoder"/"decoder") stack."""
        moe = cfg.moe
        d, f, e = cfg.d_model, cfg.d_ff, moe.num_experts
        normal = jax.nn.initializers.normal
        s = moe.init_scale  # Switch section 2.4: reduced init scale, std = sqrt(s / fan_in)
        self.router = param(rngs, normal(moe.router_init_stddev), (d, e), ("embed", "expert"))
        for name in projection_names(cfg.mlp_activations):
            setattr(self, name, param(rngs, normal((s / d) ** 0.5), (e, d, f),
                                      ("expert", "embed", "mlp")))
        self.wo = param(rngs, normal((s / f) ** 0.5), (e, f, d), ("expert", "mlp", "embed"))
        self.config = moe
        self.routing_kind = moe.routing(side)
        self.batch_prioritized = moe.batch_prioritized(side)
        self.activations = cfg.mlp_activations
        self.dtype = cfg.compute_dtype
        self.dropout_rate = (cfg.dropout_rate if moe.expert_dropout_rate is None
                             else moe.expert_dropout_rate)

    def grouping(self, rows: int, length: int) -> tuple[int, int, int]:
        """(extra rows, extra positions, groups G) for a [rows, length] batch: flaxformer's
        padding and group count with `group_size` (G a multiple of experts x expert replicas
        and of the batch's shard count); a row per group, unpadded, when `group_size` is
        None or when decoding one position (length 1)."""
        moe = self.config
        if moe.group_size is None or length == 1:
            return 0, 0, rows
        replicas = max(1, mesh_size() // (shard_count(("expert",)) * shard_count(("mlp",))))
        multiple = math.lcm(moe.num_experts * replicas, shard_count(("batch",)))
        extra_rows, extra_positions = moe_groups.batch_padding(rows, length, multiple)
        tokens = (rows + extra_rows) * (length + extra_positions)
        return extra_rows, extra_positions, moe_groups.num_groups(
            tokens, moe.group_size, multiple, moe.strict_group_size)

    def num_groups(self, rows: int, length: int) -> int:
        """Routing groups for a [rows, length] batch (after any padding)."""
        return self.grouping(rows, length)[2]

    def router_logits(self, x: jax.Array, *, rng=None, deterministic: bool = True):
        """float32 router logits [G, S, E] for groups x [G, S, d] (jitter when training)."""
        return routing.router_logits(x, self.router[...], self.config.router_jitter_noise,
                                     None if deterministic else rng)

    def capacity(self, tokens: int, deterministic: bool) -> int:
        moe = self.config
        factor = moe.eval_capacity_factor if deterministic else moe.train_capacity_factor
        return moe_groups.capacity(tokens, moe.num_experts, factor, moe.min_expert_capacity,
                                   moe.expert_capacity,
                                   "ceil" if moe.group_size is None else "round")

    def route(self, x: jax.Array, valid: jax.Array | None = None, *, rng=None,
              deterministic: bool = True):
        """(dispatch, combine, router logits, expert_index or None) for groups x [G, S, d]
        (`valid` [G, S]: real tokens; None: all)."""
        moe = self.config
        logits = self.router_logits(x, rng=rng, deterministic=deterministic)
        probs = jax.nn.softmax(logits, axis=-1)
        cap = self.capacity(x.shape[1], deterministic)
        if self.routing_kind == "experts_choose":
            dispatch, combine = routing.experts_choose(probs, cap, valid)
            return dispatch, combine, logits, None
        dispatch, combine, index = routing.tokens_choose(probs, moe.num_selected_experts, cap,
                                                         self.batch_prioritized, valid)
        return dispatch, combine, logits, index

    def experts(self, xe: jax.Array, *, rng=None, deterministic: bool = True,
                hidden_axes: tuple = HIDDEN_AXES, matmul=None) -> jax.Array:
        """Every expert's feed-forward on its slots: [E, G, C, d] -> [E, G, C, d] (or, with
        a grouped `matmul`, on rows sorted by expert)."""
        w = lambda p: p[...].astype(self.dtype)  # noqa: E731
        wi = [w(getattr(self, n)) for n in projection_names(self.activations)]
        return feed_forward(xe, wi, w(self.wo), self.activations, hidden_axes,
                            self.dropout_rate, rng, deterministic, experts=True, matmul=matmul)

    def by_einsum(self, xg, valid, *, rng=None, deterministic=True):
        """(y [G, S, d], router logits, expert_index or None, processed [G, S], load [E])
        with one-hot dispatch and combine einsums (the reference)."""
        dispatch, combine, logits, index = self.route(xg, valid, rng=fold(rng, 0),
                                                      deterministic=deterministic)
        xe = jnp.einsum("gsd,gsec->egcd", xg, dispatch.astype(xg.dtype))
        xe = constrain(xe, EXPERT_AXES)  # tokens move to their experts' devices (all-to-all)
        ye = constrain(self.experts(xe, rng=fold(rng, 1), deterministic=deterministic),
                       EXPERT_AXES)
        y = jnp.einsum("egcd,gsec->gsd", ye, combine.astype(ye.dtype))
        return (y, logits, index, jnp.sum(dispatch, axis=(2, 3)) > 0,
                jnp.sum(dispatch, axis=(0, 1, 3)))

    def by_index(self, xg, valid, *, rng=None, deterministic=True):
        """As `by_einsum`, the same routing, tokens moved by gather and scatter."""
        moe, tokens = self.config, xg.shape[1]
        logits = self.router_logits(xg, rng=fold(rng, 0), deterministic=deterministic)
        probs = jax.nn.softmax(logits, axis=-1)
        cap = self.capacity(tokens, deterministic)
        if self.routing_kind == "experts_choose":
            token_index, gates, filled = routing.experts_choose_slots(probs, cap, valid)
            slot_token = jnp.where(filled, token_index, tokens)
        else:
            expert_index, position, gates, keep = routing.tokens_choose_slots(
                probs, moe.num_selected_experts, cap, self.batch_prioritized, valid)
            slot_token = dispatch_index.slot_tokens(expert_index, position, keep,
                                                    moe.num_experts, cap)
        xe = constrain(dispatch_index.gather_slots(xg, slot_token), SLOT_AXES)
        xe = constrain(jnp.swapaxes(xe, 0, 1), EXPERT_AXES)  # all-to-all to the experts
        ye = constrain(self.experts(xe, rng=fold(rng, 1), deterministic=deterministic),
                       EXPERT_AXES)
        ye = constrain(jnp.swapaxes(ye, 0, 1), SLOT_AXES)    # and back to the groups
        if self.routing_kind == "experts_choose":
            y = dispatch_index.scatter_slots(ye, slot_token, gates, tokens)
            processed = jax.vmap(lambda t: jnp.zeros(tokens, bool).at[t].set(
                True, mode="drop"))(slot_token)
            return y, logits, None, processed, jnp.sum(filled, axis=(0, 2), dtype=jnp.float32)
        y = dispatch_index.gather_choices(ye, expert_index, position, keep, gates)
        load = jnp.zeros(moe.num_experts, jnp.float32).at[expert_index].add(keep)
        return y, logits, expert_index, jnp.any(keep, axis=-1), load

    def by_sorting(self, xg, valid, *, rng=None, deterministic=True):
        """As `by_einsum` without capacity: tokens sorted by expert, a grouped matmul."""
        moe = self.config
        if shard_count(("expert",)) > 1:
            raise ValueError("MoEConfig.dispatch='dropless' cannot run with the experts "
                             "sharded over the `expert` mesh axis (rules 'expert'): it has no "
                             "ragged all-to-all; use dispatch='index' for expert parallelism")
        logits = self.router_logits(xg, rng=fold(rng, 0), deterministic=deterministic)
        gates, expert_index = jax.lax.top_k(jax.nn.softmax(logits, axis=-1),
                                            moe.num_selected_experts)
        keep = jnp.ones(expert_index.shape, bool) if valid is None else jnp.broadcast_to(
            valid[..., None], expert_index.shape)
        rows, sizes, order = dispatch_dropless.sort_by_expert(xg, expert_index, keep,
                                                              moe.num_experts)
        ys = self.experts(rows, rng=fold(rng, 1), deterministic=deterministic,
                          hidden_axes=("batch", "length", "mlp"),
                          matmul=dispatch_dropless.grouped_matmul(sizes))
        y = dispatch_dropless.unsort(ys, order, keep, gates)
        load = jnp.zeros(moe.num_experts, jnp.float32).at[expert_index].add(keep)
        return y, logits, expert_index, jnp.any(keep, axis=-1), load

    def forward(self, x: jax.Array, token_mask: jax.Array | None = None, *, rng=None,
                deterministic: bool = True):
        """(y [B, S, d], aux) for x [B, S, d]; aux holds the router's losses, metrics and
        logits [B, S, E]. `token_mask` [B, S]: real tokens (for `ignore_padding_tokens`)."""
        moe = self.config
        rows, length, d = x.shape
        extra_rows, extra_positions, groups = self.grouping(rows, length)
        mask = token_mask if moe.ignore_padding_tokens else None
        if extra_rows or extra_positions:  # zero tokens, as flaxformer pads (padding if masked)
            pad = ((0, extra_rows), (0, extra_positions))
            x = jnp.pad(x, pad + ((0, 0),))
            if moe.ignore_padding_tokens:
                mask = jnp.pad(jnp.ones((rows, length), bool) if mask is None
                               else mask.astype(bool), pad)
        xg = constrain(x.reshape(groups, -1, d), ("batch", "length", "embed"))
        valid = None if mask is None else mask.reshape(groups, -1).astype(bool)
        move = {"einsum": self.by_einsum, "index": self.by_index,
                "dropless": self.by_sorting}[moe.dispatch]
        y, logits, index, processed, load = move(xg, valid, rng=rng,
                                                 deterministic=deterministic)
        shape = (rows + extra_rows, length + extra_positions)
        y = constrain(y, ("batch", "length", "embed")).reshape(shape + (d,))[:rows, :length]
        y = constrain(y, ("batch", "length", "embed"))
        probs = jax.nn.softmax(logits, axis=-1)
        padding = moe.router_loss_padding
        balance = (jnp.zeros((), jnp.float32) if index is None  # experts-choose: balanced
                   else routing.load_balancing_loss(probs, index, valid, padding))
        aux = {"load_balancing_loss": balance,
               "router_z_loss": routing.router_z_loss(logits, valid, padding),
               "router_logits": logits.reshape(shape + (-1,))[:rows, :length],
               **routing.load_metrics(processed, load, valid)}
        return y, aux

    def __call__(self, x: jax.Array, token_mask: jax.Array | None = None, *, rng=None,
                 deterministic: bool = True) -> jax.Array:
        return self.forward(x, token_mask, rng=rng, deterministic=deterministic)[0]


LOSSES = ("load_balancing_loss", "router_z_loss")
METRICS = LOSSES + ("dropped_fraction", "expert_load_min", "expert_load_max",
                    "expert_load_entropy")


def summarize(side: str, aux: dict, layer_indices: list[int]) -> dict:
    """Per-stack means of the stacked per-layer aux [num_moe_layers, ...], per-layer scalars
    (`{side}_layer{i}_{metric}`) and the router logits [num_moe_layers, G, S, E]."""
    out = {f"{side}_{k}": jnp.mean(aux[k]) for k in METRICS}
    for j, i in enumerate(layer_indices):
        out.update({f"{side}_layer{i}_{k}": aux[k][j] for k in METRICS})
    out[f"{side}_router_logits"] = aux["router_logits"]
    return out
