"""A stack of identical layers with params stacked on a leading `layers` axis, run by lax.scan.

The stack holds ONE layer module whose params carry the extra leading dimension. The
forward pass splits it to (graphdef, state), scans over the state and merges one slice
per step, so compile time does not grow with depth.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from model_zoo.axes import with_leading_axis
from model_zoo.dropout import fold

REMAT = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_attention_out": jax.checkpoint_policies.save_only_these_names("attention_out"),
}


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def stacked_copies(make: Callable[[nnx.Rngs], nnx.Module], count: int, axis: str,
                   rngs: nnx.Rngs) -> nnx.Module:
    """`count` independently initialised copies of `make(rngs)` as one module whose params
    are stacked on a leading logical `axis` ("layers" for a scan, "branch" for a tree)."""
    graphdefs = []

    def init_one(key):
        graphdef, state = nnx.split(make(nnx.Rngs(params=key)))
        graphdefs.append(graphdef)
        return state

    stacked = jax.vmap(init_one)(jax.random.split(rngs.params(), count))
    stacked = jax.tree.map(lambda v: with_leading_axis(v, axis, v.get_value()),
                           stacked, is_leaf=_is_variable)
    return nnx.merge(graphdefs[0], stacked)


class ScannedLayers(nnx.Module):
    def __init__(self, make_layer: Callable[[nnx.Rngs], nnx.Module], num_layers: int,
                 remat_policy: str, rngs: nnx.Rngs, first_layer: int = 0):
        self.layer = stacked_copies(make_layer, num_layers, "layers", rngs)
        self.num_layers = num_layers
        self.remat_policy = remat_policy
        self.first_layer = first_layer  # the index of this stack's first layer in its model

    def scan(self, fn: Callable, carry, xs=None, remat: bool = False):
        """lax.scan of `fn(layer, carry, x, index) -> (carry, y)` over the stacked layers
        (`index` counts from `first_layer`: a tree branch's layers above its trunk)."""
        graphdef, state = nnx.split(self.layer)

        def body(c, inputs):
            layer_state, index, x = inputs
            return fn(nnx.merge(graphdef, layer_state), c, x, index)

        if remat and self.remat_policy != "none":
            body = jax.checkpoint(body, policy=REMAT[self.remat_policy], prevent_cse=False)
        first = self.first_layer
        return jax.lax.scan(body, carry, (state, jnp.arange(first, first + self.num_layers), xs))

    def forward(self, x, *args, rng=None, deterministic=True, weights=None):
        """(outputs, aux): the stack interface shared with universal.RecurrentStack; aux holds
        the layers' aux entries (KL-Norm's `kl_norm`) stacked over the layers, `weights`
        [B, S] (real tokens) reaching them as their token mask."""
        def apply(layer, carry, _, index):
            return layer(carry, *args, rng=fold(rng, index), deterministic=deterministic,
                         with_aux=True, token_mask=weights)

        return self.scan(apply, x, remat=True)

    def map_layers(self, fn: Callable):
        """`fn(layer) -> y` for every layer, stacked on the leading axis."""
        return self.scan(lambda layer, carry, _, __: (carry, fn(layer)), None)[1]

    def __call__(self, x: jax.Array, *args, rng=None, deterministic: bool = True) -> jax.Array:
        def apply(layer, carry, _, index):
            return layer(carry, *args, rng=fold(rng, index), deterministic=deterministic), None

        return self.scan(apply, x, remat=True)[0]
