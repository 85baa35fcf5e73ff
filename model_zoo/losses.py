"""Cross entropy with z-loss and label smoothing, in float32 with a hand-written gradient.

z-loss (Mesh-TF T5 / PaLM) adds `z_loss * log(Z)^2` per token to keep the softmax
normaliser near 1. The custom VJP gives the gradient `softmax - soft_targets` directly
(plus the z-loss term), never differentiating through logsumexp.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp


def smoothing_constants(vocab: int, label_smoothing: float) -> tuple[float, float, float]:
    """(confidence, low_confidence, normalizing constant) so a perfect prediction costs 0."""
    confidence = 1.0 - label_smoothing
    low = label_smoothing / (vocab - 1)
    constant = -(confidence * math.log(confidence)
                 + (vocab - 1) * low * math.log(low + 1e-20)) if label_smoothing > 0 else 0.0
    return confidence, low, constant


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def softmax_cross_entropy(logits: jax.Array, targets: jax.Array, z_loss: float,
                          label_smoothing: float) -> tuple[jax.Array, jax.Array]:
    """Per-token (loss including z-loss, z-loss alone) for float32 logits [..., vocab]."""
    out, _ = _forward(logits, targets, z_loss, label_smoothing)
    return out


def token_losses(logits, targets, z_loss, label_smoothing):
    """Per-token (total, z-loss, log Z) for float32 logits [..., vocab]."""
    confidence, low, constant = smoothing_constants(logits.shape[-1], label_smoothing)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    # -sum_v soft_v * (logit_v - log_z), with soft = low everywhere + (confidence - low) at target
    cross = log_z - (confidence - low) * target_logit
    if low > 0:
        cross = cross - low * jnp.sum(logits, axis=-1)
    z = z_loss * jnp.square(log_z)
    return cross - constant + z, z, log_z


def logits_grad(logits, targets, log_z, g_total, g_z, z_loss, label_smoothing):
    """d(loss)/d(logits) given the per-token cotangents of (total, z-loss)."""
    confidence, low, _ = smoothing_constants(logits.shape[-1], label_smoothing)
    probs = jnp.exp(logits - log_z[..., None])
    onehot = jax.nn.one_hot(targets, logits.shape[-1], dtype=jnp.float32)
    soft = onehot * (confidence - low) + low
    dz = (2.0 * z_loss * log_z)[..., None] * probs
    return g_total[..., None] * (probs - soft + dz) + g_z[..., None] * dz


def _forward(logits, targets, z_loss, label_smoothing):
    logits = logits.astype(jnp.float32)
    total, z, log_z = token_losses(logits, targets, z_loss, label_smoothing)
    return (total, z), (logits, targets, log_z)


def _fwd(logits, targets, z_loss, label_smoothing):
    return _forward(logits, targets, z_loss, label_smoothing)


def _bwd(z_loss, label_smoothing, residuals, cotangents):
    logits, targets, log_z = residuals
    g_total, g_z = cotangents
    return logits_grad(logits, targets, log_z, g_total, g_z, z_loss, label_smoothing), None


softmax_cross_entropy.defvjp(_fwd, _bwd)


@dataclasses.dataclass(frozen=True)
class LossSums:
    """Weighted sums over tokens; divide by `weight` for per-token means.

    `objective` is the loss summed with the loss weights (training.loss_normalization),
    which differ from `weights` only for a per-sequence average; else it is `loss`.
    """

    loss: jax.Array      # cross entropy + z-loss
    z_loss: jax.Array
    correct: jax.Array   # weighted count of argmax == target
    weight: jax.Array
    objective: jax.Array


jax.tree_util.register_dataclass(
    LossSums, data_fields=["loss", "z_loss", "correct", "weight", "objective"], meta_fields=[])


def objective_sum(total: jax.Array, loss_weights: jax.Array | None,
                  loss_sum: jax.Array) -> jax.Array:
    """sum(total * loss_weights), or the already summed `loss_sum` when there are none."""
    if loss_weights is None:
        return loss_sum
    return jnp.sum(total * loss_weights.astype(jnp.float32))


def cross_entropy_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array | None = None,
                       *, z_loss: float = 1e-4, label_smoothing: float = 0.0,
                       loss_weights: jax.Array | None = None) -> LossSums:
    """Sums over `decoder_target_tokens` weighted by `decoder_loss_weights` (default: id > 0);
    `objective` is weighted by `loss_weights` (default: the same weights)."""
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {logits.shape} do not match targets {targets.shape}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 1)")
    if z_loss < 0:
        raise ValueError(f"z_loss={z_loss} must be >= 0")
    weights = (targets > 0) if weights is None else weights
    weights = weights.astype(jnp.float32)
    total, z = softmax_cross_entropy(logits, targets, float(z_loss), float(label_smoothing))
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    loss = jnp.sum(total * weights)
    return LossSums(loss=loss, z_loss=jnp.sum(z * weights), correct=jnp.sum(correct * weights),
                    weight=jnp.sum(weights),
                    objective=objective_sum(total, loss_weights, loss))
