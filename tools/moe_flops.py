"""FLOPs of one MoE layer, forward and backward, from XLA's cost analysis, per dispatch.

    python -m tools.moe_flops --preset switch_base_128 --group 4096 \
        --dispatch einsum --dispatch index [--dtype bfloat16] [--json OUT]

One MoE feed-forward layer of the preset on one routing group of `--group` tokens, at the
train capacity factor (as tools.bench), is lowered from abstract params (nothing is
materialised), and the gradient of its output and router losses with respect to params and
input is compiled for this backend. Each row gives XLA's FLOPs and their ratio to the
experts' own feed-forward FLOPs, forward and backward: 3 x 2 x E x C x d_model x d_ff x
(input projections + 1). The CPU compiler lowers a ragged dot (dropless) densely, every
expert for every row, so its CPU figure is about E times the experts' FLOPs.
"""

from __future__ import annotations

import dataclasses
import json

from tools import cli  # first: the quiet start and the log lines
import jax
import jax.numpy as jnp

from model_zoo.moe import moe_groups
from model_zoo import preset
from model_zoo.config import DISPATCHES
from model_zoo.ffn import projection_names
from model_zoo.model_def import model_def
from model_zoo.moe.moe_layer import MoEFeedForward


def layer_flops(preset_name: str, group: int, dispatch: str, dtype: str = "float32") -> dict:
    """XLA's FLOPs for one MoE layer's forward and backward on one group, and the ratio."""
    cfg = preset(preset_name, dtype=dtype, dropout_rate=0.0)
    # one row of `group` tokens with a row per group: exactly one routing group
    moe = dataclasses.replace(cfg.moe, dispatch=dispatch, group_size=None,
                              eval_capacity_factor=cfg.moe.train_capacity_factor)
    cfg = cfg.replace(moe=moe)
    mdef = model_def(lambda r: MoEFeedForward(cfg, "encoder", r))
    x = jax.ShapeDtypeStruct((1, group, cfg.d_model), cfg.compute_dtype)

    def objective(params, x):
        y, aux = mdef.bind(params).forward(x)
        return jnp.sum(y.astype(jnp.float32)) + aux["load_balancing_loss"] + aux["router_z_loss"]

    compiled = jax.jit(jax.grad(objective, argnums=(0, 1))).lower(
        mdef.abstract_params(), x).compile()
    cost = compiled.cost_analysis()
    flops = float((cost[0] if isinstance(cost, list) else cost)["flops"])
    cap = moe_groups.capacity(group, moe.num_experts, moe.train_capacity_factor,
                              moe.min_expert_capacity, moe.expert_capacity, "ceil")
    matrices = len(projection_names(cfg.mlp_activations)) + 1
    experts = 3 * 2 * moe.num_experts * cap * cfg.d_model * cfg.d_ff * matrices
    return {"model": preset_name, "group": group, "dispatch": dispatch, "dtype": dtype,
            "num_experts": moe.num_experts, "capacity": cap,
            "device_kind": jax.devices()[0].device_kind, "xla_flops": flops,
            "experts_flops": experts, "ratio": round(flops / experts, 3)}


def main(argv=None):
    p = cli.parser(__doc__)
    p.add_argument("--preset", default="switch_base_128")
    p.add_argument("--group", type=int, default=4096, help="tokens in the routing group")
    p.add_argument("--dispatch", action="append", choices=DISPATCHES,
                   help="repeatable (default: einsum and index)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--json", help="also append the rows as JSON lines to this file")
    args = p.parse_args(argv)
    for dispatch in args.dispatch or ["einsum", "index"]:
        row = layer_flops(args.preset, args.group, dispatch, args.dtype)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
