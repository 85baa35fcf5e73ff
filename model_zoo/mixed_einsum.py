"""A two-operand einsum with low-precision products and fp32 accumulation, both ways.

Mixed-precision training (Micikevicius et al., 2018) multiplies in bf16/fp16 and accumulates
in fp32. `jnp.einsum(..., preferred_element_type=float32)` does that forward, but JAX's
gradient of it promotes the bf16 operand to fp32 to meet the fp32 cotangent, so the two
backward matmuls run in fp32, at a fraction of the bf16 rate. `mixed_einsum` rounds the
cotangent to the operands' dtype instead, so all three matmuls of a layer stay bf16/fp16
(as PyTorch autocast and cuDNN's attention backward do). With fp32 operands it is the
plain einsum.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def mixed_einsum(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """einsum(spec, a, b) in fp32, from products in a's and b's (common) dtype."""
    if jnp.result_type(a, b) == jnp.float32:
        return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)
    return _low_precision_backward(spec, a, b)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _low_precision_backward(spec, a, b):
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


def _fwd(spec, a, b):
    return _low_precision_backward(spec, a, b), (a, b)


def _bwd(spec, residuals, g):
    a, b = residuals
    out, pullback = jax.vjp(functools.partial(jnp.einsum, spec), a, b)
    return pullback(g.astype(out.dtype))


_low_precision_backward.defvjp(_fwd, _bwd)
