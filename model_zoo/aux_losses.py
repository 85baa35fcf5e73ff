"""What the variants add to T5's cross entropy, one hook each: ACT's ponder cost (Universal
Transformer), the router losses (Switch/ST-MoE) and KL-Norm's regulariser.

A hook reads the encoder's and decoder's aux dicts (what their stacks returned) and gives its
metrics plus "loss", its weighted share of the auxiliary loss; a plain T5 has none.
"""

from __future__ import annotations

import jax.numpy as jnp

from model_zoo.config import ModelConfig
from model_zoo.moe.moe_layer import summarize


def ponder(config: ModelConfig, enc: dict, dec: dict) -> dict | None:
    """ACT (Graves 2016) as the Universal Transformer uses it: tau x both stacks' ponder cost."""
    u = config.universal
    if u is None or not u.act:
        return None
    loss = u.ponder_tau * (enc["ponder_cost"] + dec["ponder_cost"])
    return {"loss": loss, "ponder_loss": loss, "encoder_ponder_steps": enc["ponder_steps"],
            "decoder_ponder_steps": dec["ponder_steps"]}


def router(config: ModelConfig, enc: dict, dec: dict, moe_layers: dict) -> dict | None:
    """Router losses, reduced over the MoE layers by `MoEConfig.router_loss_reduction`
    ("layers_mean": t5x's mean over every MoE layer of both stacks; "stacks_sum": each
    stack's mean, summed, as HF), weighted, plus per-stack and per-layer router metrics.

    `moe_layers`: {"encoder"/"decoder": that stack's MoE layer indices}.
    """
    moe = config.moe
    if moe is None:
        return None
    out, stacks = {}, [aux for aux in (enc, dec) if "router_logits" in aux]
    for side, aux in (("encoder", enc), ("decoder", dec)):
        if "router_logits" in aux:
            out.update(summarize(side, aux, moe_layers[side]))

    def reduce(name):
        if not stacks:
            return jnp.zeros((), jnp.float32)
        if moe.router_loss_reduction == "layers_mean":
            return jnp.mean(jnp.concatenate([jnp.reshape(a[name], (-1,)) for a in stacks]))
        return sum(jnp.mean(a[name]) for a in stacks)

    balance, z = reduce("load_balancing_loss"), reduce("router_z_loss")
    return {**out, "load_balancing_loss": balance, "router_z_loss": z,
            "loss": moe.load_balancing_loss_weight * balance + moe.router_z_loss_weight * z}


def kl_norm(config: ModelConfig, enc: dict, dec: dict) -> dict | None:
    """KL-Norm's regulariser: each stack's KL per real token (summed over its norms)."""
    if config.norm != "kl":
        return None
    loss = config.kl_norm_weight * (enc["kl_norm"] + dec["kl_norm"])
    return {"encoder_kl_norm": enc["kl_norm"], "decoder_kl_norm": dec["kl_norm"],
            "kl_norm_loss": loss, "loss": loss}


def auxiliary(config: ModelConfig, enc: dict, dec: dict, moe_layers: dict) -> dict:
    """{'loss': the sum of the hooks' losses (0 for plain T5), every hook's metrics}."""
    out = {"loss": jnp.zeros((), jnp.float32)}
    for part in (ponder(config, enc, dec), router(config, enc, dec, moe_layers),
                 kl_norm(config, enc, dec)):
        if part is not None:
            out = {**out, **part, "loss": out["loss"] + part["loss"]}
    return out
