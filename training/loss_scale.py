"""Dynamic loss scaling for fp16 (Micikevicius et al. 2018), state kept in the train state.

The loss is multiplied by `scale` before the backward pass and the grads divided after.
One global finiteness check decides the step: on overflow the update is skipped (params
and optimizer state unchanged), the scale is divided by `factor` (not below `floor`) and
`skipped` counts it; after `period` finite steps in a row the scale grows by `factor` if
the grown scale is finite in float32 (torch.amp.GradScaler's rule), and the count restarts.
Any precision skips a non-finite step; `skipped_in_a_row` counts the current streak, which
the loop turns into an error (LoopConfig.max_consecutive_skipped_steps) instead of a stall.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

_F32_MAX = float(np.finfo(np.float32).max)


@dataclasses.dataclass(frozen=True)
class LossScaleConfig:
    dynamic: bool = False
    initial_scale: float = 2.0 ** 15
    period: int = 2000
    factor: float = 2.0
    floor: float = 1.0

    def __post_init__(self):
        if self.initial_scale < self.floor or self.floor <= 0:
            raise ValueError(f"LossScaleConfig: need 0 < floor ({self.floor}) <= initial_scale "
                             f"({self.initial_scale})")
        if not self.initial_scale <= _F32_MAX:
            raise ValueError(f"LossScaleConfig.initial_scale={self.initial_scale} must be a "
                             f"finite float32 (<= {_F32_MAX:.4g})")
        if self.period < 1 or self.factor <= 1:
            raise ValueError(f"LossScaleConfig: period={self.period} must be >= 1 and "
                             f"factor={self.factor} > 1")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class LossScaleState:
    scale: jax.Array        # f32 scalar
    good_steps: jax.Array   # i32 finite steps since the last change
    skipped: jax.Array      # i32 total skipped steps
    skipped_in_a_row: jax.Array  # i32 skipped steps since the last finite one


def init_loss_scale(cfg: LossScaleConfig) -> LossScaleState:
    scale = cfg.initial_scale if cfg.dynamic else 1.0
    zero = jnp.zeros((), jnp.int32)
    return LossScaleState(jnp.asarray(scale, jnp.float32), zero, zero, zero)


def all_finite(tree) -> jax.Array:
    """One boolean: every element of every leaf is finite."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def update_loss_scale(cfg: LossScaleConfig, state: LossScaleState,
                      finite: jax.Array) -> LossScaleState:
    """The next loss-scale state after a step whose grads were `finite` (or not)."""
    skipped = state.skipped + (~finite).astype(jnp.int32)
    in_a_row = jnp.where(finite, 0, state.skipped_in_a_row + 1).astype(jnp.int32)
    if not cfg.dynamic:
        return LossScaleState(state.scale, state.good_steps + finite.astype(jnp.int32),
                              skipped, in_a_row)
    grow = finite & (state.good_steps + 1 >= cfg.period)
    grown = state.scale * cfg.factor  # float32: 2^127 x 2 is inf, and inf never backs off
    scale = jnp.where(finite, jnp.where(grow & jnp.isfinite(grown), grown, state.scale),
                      jnp.maximum(state.scale / cfg.factor, cfg.floor))
    good = jnp.where(finite & ~grow, state.good_steps + 1, 0)
    return LossScaleState(scale.astype(jnp.float32), good.astype(jnp.int32), skipped, in_a_row)
