"""Functional dropout: the key is passed in, so scanned layers stay pure."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def dropout(x: jax.Array, rate: float, rng: jax.Array | None, deterministic: bool) -> jax.Array:
    """Inverted dropout; identity when `deterministic` or `rate == 0`."""
    if deterministic or rate == 0.0:
        return x
    if rng is None:
        raise ValueError("dropout with deterministic=False needs a dropout_rng")
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x)).astype(x.dtype)


def fold(rng: jax.Array | None, *data: int | jax.Array) -> jax.Array | None:
    """`rng` folded with each of `data` in turn (None stays None)."""
    for d in data:
        if rng is None:
            return None
        rng = jax.random.fold_in(rng, d)
    return rng
