"""The train state: fp32 params, optimizer state, step, rng and loss-scale state (one pytree)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from training.loss_scale import LossScaleConfig, LossScaleState, init_loss_scale


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    step: jax.Array
    params: dict
    opt_state: optax.OptState
    rng: jax.Array
    loss_scale: LossScaleState


def init_train_state(params: dict, optimizer: optax.GradientTransformation, seed: int,
                     loss_scale: LossScaleConfig) -> TrainState:
    params = jax.tree.map(lambda p: p.astype(jnp.float32), params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params),
                      rng=jax.random.key_data(jax.random.key(seed + 1)),
                      loss_scale=init_loss_scale(loss_scale))
