"""A layer stack with an MoE feed-forward every N layers, still scanned.

The stack scans over blocks of N consecutive layers (params stacked on `layers`, one entry
per block); in each block the layer at `sparse_position(N)` has the MoE feed-forward and
the others are dense. Position 1 (0 when N = 1) reproduces HF SwitchTransformers' layout,
where layer i is sparse when i % N == 1. The stack offers the interface of
`scan.ScannedLayers` (`forward`, `scan`, `map_layers`, `num_layers`) per layer, so the
decoder's KV cache and decoding see ordinary layers.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from model_zoo.dropout import fold
from model_zoo.scan import ScannedLayers


def sparse_position(step: int) -> int:
    return 1 if step > 1 else 0


class SparseBlock(nnx.Module):
    """`step` layers `layer_0..layer_{step-1}`, the one at `sparse_position` MoE."""

    def __init__(self, make_layer: Callable, step: int, rngs: nnx.Rngs):
        for j in range(step):
            setattr(self, f"layer_{j}", make_layer(rngs, j == sparse_position(step)))
        self.step = step

    def sublayers(self) -> list:
        return [getattr(self, f"layer_{j}") for j in range(self.step)]


class MoEStack(nnx.Module):
    def __init__(self, make_layer: Callable[[nnx.Rngs, bool], nnx.Module], num_layers: int,
                 step: int, remat_policy: str, rngs: nnx.Rngs):
        if step < 1 or num_layers % step:
            raise ValueError(f"num_layers={num_layers} must be a multiple of the sparse step "
                             f"{step}")
        self.blocks = ScannedLayers(lambda r: SparseBlock(make_layer, step, r),
                                    num_layers // step, remat_policy, rngs)
        self.step = step
        self.num_layers = num_layers

    @property
    def moe_layer_indices(self) -> list[int]:
        return list(range(sparse_position(self.step), self.num_layers, self.step))

    def forward(self, x, *args, rng=None, deterministic=True, weights=None):
        """(outputs, aux) with each MoE aux entry stacked over the blocks (KL-Norm's `kl_norm`
        summed over each block's layers); `weights` [B, S] (real tokens) reaches the layers as
        their token mask."""
        sparse = sparse_position(self.step)

        def apply(block, h, _, b):
            aux, kls = None, []
            for j, layer in enumerate(block.sublayers()):
                r = fold(rng, b * self.step + j)
                h, layer_aux = layer(h, *args, rng=r, deterministic=deterministic,
                                     with_aux=True, token_mask=weights)
                if "kl_norm" in layer_aux:  # KL-Norm: summed over the block's layers
                    kls.append(layer_aux.pop("kl_norm"))
                if j == sparse:
                    aux = layer_aux
            return h, ({**aux, "kl_norm": sum(kls)} if kls else aux)

        return self.blocks.scan(apply, x, remat=True)

    def scan(self, fn: Callable, carry, xs=None, remat: bool = False):
        """`fn(layer, carry, x, index) -> (carry, y)` over every layer; xs lead with depth."""
        split = (None if xs is None else jax.tree.map(
            lambda a: a.reshape((self.num_layers // self.step, self.step) + a.shape[1:]), xs))

        def apply(block, c, x_b, b):
            ys = []
            for j, layer in enumerate(block.sublayers()):
                x_j = None if x_b is None else jax.tree.map(lambda a: a[j], x_b)  # noqa: B023
                c, y = fn(layer, c, x_j, b * self.step + j)
                ys.append(y)
            return c, jax.tree.map(lambda *a: jnp.stack(a), *ys)

        carry, ys = self.blocks.scan(apply, carry, split, remat)
        return carry, jax.tree.map(lambda a: a.reshape((self.num_layers,) + a.shape[2:]), ys)

    def map_layers(self, fn: Callable):
        """`fn(layer) -> y` for every layer, stacked on the leading axis."""
        return self.scan(lambda layer, carry, _, __: (carry, fn(layer)), None)[1]
