"""Score mode: the log-likelihood of given targets, log p(y | x) = sum_t log p(y_t | y_<t, x).

What seqio's `score_metric_fns` and rank classification consume: one float per example, the
sum over the target's non-padding positions (id 0 is padding; EOS, id 1, counts). Teacher-forced
in one forward pass, deterministic (no dropout); log-softmax in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def shift_right(targets: jax.Array) -> jax.Array:
    """Decoder inputs for teacher forcing: 0 (the start id) then the targets but the last."""
    return jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]


def token_log_likelihoods(model, encoder_input_tokens, decoder_target_tokens,
                          byte_encoder_input_tokens=None) -> jax.Array:
    """[batch, length] float32 log p(y_t | y_<t, x), 0 where the target is padding."""
    logits = model(encoder_input_tokens, shift_right(decoder_target_tokens),
                   byte_encoder_input_tokens=byte_encoder_input_tokens, deterministic=True)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(log_probs, decoder_target_tokens[..., None], axis=-1)[..., 0]
    return jnp.where(decoder_target_tokens > 0, picked, 0.0)


def sequence_log_likelihood(model, encoder_input_tokens, decoder_target_tokens,
                            byte_encoder_input_tokens=None) -> jax.Array:
    """[batch] float32 sum of the target's token log-likelihoods."""
    return token_log_likelihoods(model, encoder_input_tokens, decoder_target_tokens,
                                 byte_encoder_input_tokens).sum(axis=-1)
