"""The mixture-of-experts feed-forward layer: fp32 router, dispatch, experts, combine.

Tokens [B, S, d] are regrouped into G routing groups [G, S_g, d] of consecutive tokens
(`MoEConfig.group_size` tokens at most, as flaxformer's `max_group_size`; one sequence each
when it is None), G a multiple of the batch's shard count so that a group never spans
devices: the regrouping is local and the group axis keeps the `batch` sharding. One
decoding step (S = 1) keeps one group per row, so decoding never drops. Groups are
dispatched by einsum to an [E, G, C, d] tensor whose sharding hint puts experts on the
`expert` logical axis and the groups on the remaining batch axes, so with expert
parallelism XLA moves tokens between devices all-to-all; the experts' weights [E, ...] are
sharded on `expert` too. Gradients flow through the same einsums, so nothing needs
rescaling by hand. With `ignore_padding_tokens`, the stack's token mask keeps padding out
of routing (no slot), the router losses and the metrics.

Against HF SwitchTransformers (checked in tests/test_moe_hf.py, which reads HF's settings:
`group_size=None`, padding routed): same routing groups (a sequence), position priority,
drops (a dropped token's MoE output is 0), router logits and z-loss. Differences: (1)
capacity comes from factors (ceil(cf * S / E), HF takes a fixed `expert_capacity`, which
`MoEConfig.expert_capacity` reproduces); (2) with several MoE layers in a stack the
balancing loss is the mean of the per-layer Switch losses, where HF pools all layers'
tokens before multiplying f and P (equal with one MoE layer per stack); (3) jitter
multiplies the router's input only (HF's in-place multiply also reaches the experts' input
in float32 training).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from model_zoo import routing
from model_zoo.axes import constrain, param, shard_count
from model_zoo.config import ModelConfig
from model_zoo.dropout import fold
from model_zoo.ffn import feed_forward, projection_names

EXPERT_AXES = ("expert", "batch", "length", "embed")
HIDDEN_AXES = ("expert", "batch", "length", "mlp")


class MoEFeedForward(nnx.Module):
    def __init__(self, cfg: ModelConfig, routing_kind: str, rngs: nnx.Rngs):
        moe = cfg.moe
        d, f, e = cfg.d_model, cfg.d_ff, moe.num_experts
        normal = jax.nn.initializers.normal
        s = moe.init_scale  # Switch section 2.4: reduced init scale, std = sqrt(s / fan_in)
        self.router = param(rngs, normal((s / d) ** 0.5), (d, e), ("embed", "expert"))
        for name in projection_names(cfg.mlp_activations):
            setattr(self, name, param(rngs, normal((s / d) ** 0.5), (e, d, f),
                                      ("expert", "embed", "mlp")))
        self.wo = param(rngs, normal((s / f) ** 0.5), (e, f, d), ("expert", "mlp", "embed"))
        self.config = moe
        self.routing_kind = routing_kind
        self.activations = cfg.mlp_activations
        self.dtype = cfg.compute_dtype
        self.dropout_rate = (cfg.dropout_rate if moe.expert_dropout_rate is None
                             else moe.expert_dropout_rate)

    def num_groups(self, rows: int, length: int) -> int:
        """Routing groups for a [rows, length] batch: at most `group_size` tokens each, a
        multiple of the batch axis's shard count; rows when `group_size` is None or when
        decoding one position (length 1)."""
        size = self.config.group_size
        size = length if size is None or length == 1 else size
        return routing.num_groups(rows * length, size, shard_count(("batch",)))

    def route(self, x: jax.Array, valid: jax.Array | None = None, *, rng=None,
              deterministic: bool = True):
        """(dispatch, combine, router logits, expert_index or None) for groups x [G, S, d]
        (`valid` [G, S]: real tokens; None: all)."""
        moe = self.config
        logits = router_logits = routing.router_logits(
            x, self.router[...], moe.router_jitter_noise, None if deterministic else rng)
        probs = jax.nn.softmax(logits, axis=-1)
        factor = moe.eval_capacity_factor if deterministic else moe.train_capacity_factor
        cap = routing.capacity(x.shape[1], moe.num_experts, factor, moe.min_expert_capacity,
                               moe.expert_capacity)
        if self.routing_kind == "experts_choose":
            dispatch, combine = routing.experts_choose(probs, cap, valid)
            return dispatch, combine, router_logits, None
        dispatch, combine, index = routing.tokens_choose(probs, moe.num_selected_experts, cap,
                                                         moe.batch_prioritized_routing, valid)
        return dispatch, combine, router_logits, index

    def experts(self, xe: jax.Array, *, rng=None, deterministic: bool = True) -> jax.Array:
        """Every expert's feed-forward on its slots: [E, G, C, d] -> [E, G, C, d]."""
        w = lambda p: p[...].astype(self.dtype)  # noqa: E731
        wi = [w(getattr(self, n)) for n in projection_names(self.activations)]
        ye = feed_forward(xe, wi, w(self.wo), self.activations, HIDDEN_AXES, self.dropout_rate,
                          rng, deterministic, experts=True)
        return constrain(ye, EXPERT_AXES)

    def forward(self, x: jax.Array, token_mask: jax.Array | None = None, *, rng=None,
                deterministic: bool = True):
        """(y [B, S, d], aux) for x [B, S, d]; aux holds the router's losses, metrics and
        logits [B, S, E]. `token_mask` [B, S]: real tokens (for `ignore_padding_tokens`)."""
        rows, length, d = x.shape
        groups = self.num_groups(rows, length)
        xg = constrain(x.reshape(groups, -1, d), ("batch", "length", "embed"))
        valid = (token_mask.reshape(groups, -1).astype(bool)
                 if token_mask is not None and self.config.ignore_padding_tokens else None)
        dispatch, combine, logits, index = self.route(xg, valid, rng=fold(rng, 0),
                                                      deterministic=deterministic)
        xe = jnp.einsum("gsd,gsec->egcd", xg, dispatch.astype(x.dtype))
        xe = constrain(xe, EXPERT_AXES)  # tokens move to their experts' devices (all-to-all)
        ye = self.experts(xe, rng=fold(rng, 1), deterministic=deterministic)
        y = jnp.einsum("egcd,gsec->gsd", ye, combine.astype(ye.dtype))
        y = constrain(constrain(y, ("batch", "length", "embed")).reshape(rows, length, d),
                      ("batch", "length", "embed"))
        probs = jax.nn.softmax(logits, axis=-1)
        balance = (jnp.zeros((), jnp.float32) if index is None  # experts-choose: balanced
                   else routing.load_balancing_loss(probs, index, valid))
        aux = {"load_balancing_loss": balance,
               "router_z_loss": routing.router_z_loss(logits, valid),
               "router_logits": logits.reshape(rows, length, -1),
               **routing.routing_metrics(dispatch, valid)}
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
