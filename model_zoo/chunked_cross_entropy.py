"""Output projection fused with the z-loss cross entropy, in chunks of target positions.

The plain path materialises float32 logits [batch, length, vocab] for the loss and keeps
them for the backward pass, which then builds probabilities and their gradient of the same
size. Here the projection, the loss and its gradient run over `chunk` target positions at
a time (`lax.scan` along the length axis, so a batch sharded over data stays put): peak
logits memory is [batch, chunk, vocab] and the backward pass recomputes each chunk's
logits instead of storing them (one extra matmul of the output layer). Same values and
gradients as `losses.cross_entropy_loss` on the full logits.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from fields.integers import require_int
from model_zoo.losses import LossSums, logits_grad, objective_sum, token_losses


def _chunks(x: jax.Array, chunk: int) -> jax.Array:
    """[B, T, ...] -> [T/chunk, B, chunk, ...] (T already a multiple of chunk)."""
    b, t = x.shape[:2]
    return jnp.moveaxis(x.reshape((b, t // chunk, chunk) + x.shape[2:]), 1, 0)


def _unchunk(x: jax.Array) -> jax.Array:
    """[T/chunk, B, chunk, ...] -> [B, T, ...]."""
    x = jnp.moveaxis(x, 0, 1)
    return x.reshape((x.shape[0], x.shape[1] * x.shape[2]) + x.shape[3:])


def _logits(x, kernel, scale):
    return jnp.einsum("bcd,dv->bcv", x, kernel, preferred_element_type=jnp.float32) * scale


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _per_token(hidden, kernel, targets, scale, z_loss, label_smoothing, chunk):
    return _forward(hidden, kernel, targets, scale, z_loss, label_smoothing, chunk)[0]


def _forward(hidden, kernel, targets, scale, z_loss, label_smoothing, chunk):
    def body(_, xs):
        x, t = xs
        logits = _logits(x, kernel, scale)
        total, z, log_z = token_losses(logits, t, z_loss, label_smoothing)
        correct = (jnp.argmax(logits, axis=-1) == t).astype(jnp.float32)
        return None, (total, z, correct, log_z)

    _, (total, z, correct, log_z) = jax.lax.scan(
        body, None, (_chunks(hidden, chunk), _chunks(targets, chunk)))
    out = (_unchunk(total), _unchunk(z), _unchunk(correct))
    return out, (hidden, kernel, targets, log_z)


def _fwd(hidden, kernel, targets, scale, z_loss, label_smoothing, chunk):
    return _forward(hidden, kernel, targets, scale, z_loss, label_smoothing, chunk)


def _bwd(scale, z_loss, label_smoothing, chunk, residuals, cotangents):
    hidden, kernel, targets, log_z = residuals
    g_total, g_z, _ = cotangents

    def body(d_kernel, xs):
        x, t, lz, gt, gz = xs
        d_logits = logits_grad(_logits(x, kernel, scale), t, lz, gt, gz, z_loss,
                               label_smoothing) * scale
        d_x = jnp.einsum("bcv,dv->bcd", d_logits.astype(kernel.dtype), kernel,
                         preferred_element_type=jnp.float32).astype(x.dtype)
        d_kernel = d_kernel + jnp.einsum("bcd,bcv->dv", x, d_logits.astype(x.dtype),
                                         preferred_element_type=jnp.float32)
        return d_kernel, d_x

    xs = tuple(_chunks(a, chunk) for a in (hidden, targets)) + (log_z,) + tuple(
        _chunks(a, chunk) for a in (g_total, g_z))
    d_kernel, d_hidden = jax.lax.scan(body, jnp.zeros(kernel.shape, jnp.float32), xs)
    return _unchunk(d_hidden), d_kernel.astype(kernel.dtype), None


_per_token.defvjp(_fwd, _bwd)


def chunked_cross_entropy_loss(hidden: jax.Array, kernel: jax.Array, targets: jax.Array,
                               weights: jax.Array | None = None, *, scale: float = 1.0,
                               chunk: int = 128, z_loss: float = 1e-4,
                               label_smoothing: float = 0.0,
                               loss_weights: jax.Array | None = None) -> LossSums:
    """LossSums of `logits = scale * hidden @ kernel` against `targets`, never whole.

    hidden [batch, length, d_model] (compute dtype), kernel [d_model, vocab]; a length that
    is not a multiple of `chunk` is padded with zero-weight positions.
    """
    if hidden.shape[:-1] != targets.shape or hidden.shape[-1] != kernel.shape[0]:
        raise ValueError(f"hidden {hidden.shape}, kernel {kernel.shape} and targets "
                         f"{targets.shape} do not fit [B, T, d] x [d, V] -> [B, T]")
    require_int("chunked_cross_entropy", "chunk", chunk, 1,
                meaning="target positions per step")
    if not 0.0 <= label_smoothing < 1.0 or z_loss < 0:
        raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 1) and "
                         f"z_loss={z_loss} >= 0")
    weights = (targets > 0) if weights is None else weights
    weights = weights.astype(jnp.float32)
    pad = -targets.shape[1] % chunk
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        targets, weights = (jnp.pad(a, ((0, 0), (0, pad))) for a in (targets, weights))
        if loss_weights is not None:
            loss_weights = jnp.pad(loss_weights, ((0, 0), (0, pad)))
    total, z, correct = _per_token(hidden, kernel, targets, float(scale), float(z_loss),
                                   float(label_smoothing), min(chunk, targets.shape[1]))
    loss = jnp.sum(total * weights)
    return LossSums(loss=loss, z_loss=jnp.sum(z * weights),
                    correct=jnp.sum(jax.lax.stop_gradient(correct) * weights),
                    weight=jnp.sum(weights),
                    objective=objective_sum(total, loss_weights, loss))
