"""Universal Transformer recurrence (Dehghani et al. 2019) with adaptive computation time.

A `RecurrentStack` holds ONE shared block (a `ScannedLayers` of the usual T5 layers) and
applies it `steps` times with `lax.scan`, adding the paper's sinusoidal timestep signal
before each step (T5's relative position bias already gives positions), so the parameter
count does not depend on the number of steps. With ACT (Graves 2016) each
token computes a halting probability per step; it halts once the running sum would pass
the threshold (or at the last step), its remainder R = 1 - sum so far becomes its last
weight, the output is the halting-weighted sum of its states (weights sum to 1), and a
halted token's state stops updating. Ponder cost = N + R per token.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from model_zoo.axes import param
from model_zoo.config import ModelConfig, UniversalConfig
from model_zoo.dropout import fold
from model_zoo.norm import token_mean
from model_zoo.scan import ScannedLayers
from model_zoo.moe.sparse_stack import MoEStack


def make_stack(cfg: ModelConfig, make_layer: Callable[..., nnx.Module], num_layers: int,
               rngs: nnx.Rngs, side: str = "encoder"):
    """Dense T5: `num_layers` scanned layers. Universal: a shared block of them, recurrent.
    MoE: blocks of `moe.{side}_sparse_step` layers, one MoE each (`make_layer(rngs, sparse)`)."""
    if cfg.moe is not None and cfg.moe.sparse_step(side):
        return MoEStack(make_layer, num_layers, cfg.moe.sparse_step(side), cfg.remat_policy,
                        rngs)
    if cfg.universal is None:
        return ScannedLayers(make_layer, num_layers, cfg.remat_policy, rngs)
    return RecurrentStack(make_layer, num_layers, cfg.universal, cfg.d_model, cfg.remat_policy,
                          rngs)


def timestep_signal(steps: int, d_model: int) -> jax.Array:
    """Sinusoids of the step index (Vaswani et al.'s position encoding over time), [steps, d]."""
    half = d_model // 2
    rates = jnp.exp(-jnp.log(10_000.0) * jnp.arange(half) / max(half - 1, 1))
    angles = jnp.arange(steps, dtype=jnp.float32)[:, None] * rates[None, :]
    signal = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=1)
    return jnp.pad(signal, ((0, 0), (0, d_model - 2 * half)))


class RecurrentStack(nnx.Module):
    def __init__(self, make_layer, block_layers: int, ucfg: UniversalConfig, d_model: int,
                 remat_policy: str, rngs: nnx.Rngs):
        self.block = ScannedLayers(make_layer, block_layers, remat_policy, rngs)
        self.d_model = d_model
        if ucfg.act:
            self.halting_kernel = param(rngs, jax.nn.initializers.normal(d_model ** -0.5),
                                        (d_model,), ("embed",))
            # Graves: a positive initial bias halts early until the model learns otherwise.
            self.halting_bias = param(rngs, jax.nn.initializers.constant(1.0), (), ())
        self.config = ucfg
        self.block_layers = block_layers

    @property
    def num_layers(self) -> int:
        """Layer applications per pass (cache depth): steps x block layers."""
        return self.config.steps * self.block_layers

    def halting_probability(self, h: jax.Array) -> jax.Array:
        logit = jnp.einsum("bld,d->bl", h.astype(jnp.float32), self.halting_kernel[...])
        return jax.nn.sigmoid(logit + self.halting_bias[...])

    def recur(self, x: jax.Array, apply_block: Callable, xs=None, weights=None):
        """Apply `apply_block(h, t, x_t) -> (h, y_t)` over the steps; returns (x, ys, aux)."""
        steps = self.config.steps
        timestep = timestep_signal(steps, self.d_model).astype(x.dtype)
        index = jnp.arange(steps)
        if not self.config.act:
            def body(h, inputs):
                t, x_t = inputs
                return apply_block(h + timestep[t], t, x_t)
            x, ys = jax.lax.scan(body, x, (index, xs))
            return x, ys, {}

        zeros = jnp.zeros(x.shape[:2], jnp.float32)

        def act_body(carry, inputs):
            state, acc, total, halted, remainder, updates = carry
            t, x_t = inputs
            h = state + timestep[t]
            p = self.halting_probability(h)
            running = ~halted
            crosses = (total + p > self.config.act_threshold) | (t == steps - 1)
            stops = running & crosses
            continues = running & ~crosses
            weight = jnp.where(continues, p, 0.0) + jnp.where(stops, 1.0 - total, 0.0)
            remainder = remainder + jnp.where(stops, 1.0 - total, 0.0)
            total = total + jnp.where(continues, p, 0.0)
            updates = updates + running.astype(jnp.float32)
            new_state, y = apply_block(h, t, x_t)
            acc = acc + weight[..., None] * new_state.astype(jnp.float32)
            state = jnp.where(running[..., None], new_state, state)
            return (state, acc, total, halted | stops, remainder, updates), (y, weight)

        init = (x, jnp.zeros(x.shape, jnp.float32), zeros, jnp.zeros(x.shape[:2], bool), zeros,
                zeros)
        (_, acc, _, _, remainder, updates), (ys, weights_t) = jax.lax.scan(
            act_body, init, (index, xs))
        aux = {"ponder_cost": token_mean(updates + remainder, weights),
               "ponder_steps": token_mean(updates, weights), "halting_weights": weights_t}
        return acc.astype(x.dtype), ys, aux

    def forward(self, x, *args, rng=None, deterministic=True, weights=None):
        """(outputs, aux): ACT's ponder aux, and the block's aux entries (KL-Norm's
        `kl_norm`) stacked over steps x block layers."""
        def apply_block(h, t, _):
            return self.block.forward(h, *args, rng=fold(rng, t), deterministic=deterministic,
                                      weights=weights)
        x, ys, aux = self.recur(x, apply_block, weights=weights)
        return x, {**aux, **ys}

    def scan(self, fn: Callable, carry, xs=None, remat: bool = False):
        """Like ScannedLayers.scan over all steps x block layers; xs lead with that depth."""
        split = (None if xs is None else jax.tree.map(
            lambda a: a.reshape((self.config.steps, self.block_layers) + a.shape[1:]), xs))

        def apply_block(h, t, x_t):
            return self.block.scan(lambda layer, c, x, i: fn(layer, c, x, t * self.block_layers
                                                            + i), h, x_t, remat)
        carry, ys, _ = self.recur(carry, apply_block, split)
        ys = jax.tree.map(lambda a: a.reshape((self.num_layers,) + a.shape[2:]), ys)
        return carry, ys

    def map_layers(self, fn: Callable):
        """`fn(layer) -> y` for every layer application (steps x block), stacked."""
        ys = self.block.map_layers(fn)
        return jax.tree.map(lambda a: jnp.concatenate([a] * self.config.steps, axis=0), ys)
