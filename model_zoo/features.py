"""Checks of the feature arrays a T5 is called with (t5x/seqio names), before any compute."""

from __future__ import annotations

import jax.numpy as jnp


def check_tokens(name: str, tokens, batch: int | None = None) -> None:
    """`tokens` must be integer ids [batch, length] (with the given batch, if any)."""
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"{name} must be integer ids of shape [batch, length]; "
                         f"got {tokens.dtype} of shape {tokens.shape}")
    if batch is not None and tokens.shape[0] != batch:
        raise ValueError(f"{name} has batch {tokens.shape[0]}, expected {batch} "
                         "(the batch of encoder_input_tokens)")


def check_same_shape(name: str, feature, tokens_name: str, tokens) -> None:
    """A segment-id or position feature (None: absent) must have its tokens' shape."""
    if feature is not None and feature.shape != tokens.shape:
        raise ValueError(f"{name} has shape {feature.shape}; expected {tokens.shape}, "
                         f"the shape of {tokens_name}")
