"""mixed_einsum: fp32 results from bf16 products, and gradients whose matmuls stay bf16."""

import jax
import jax.numpy as jnp
import numpy as np

from model_zoo.mixed_einsum import mixed_einsum
from tools import hlo_audit
from experiments.perf import hlo_text

SPEC = "btd,dv->btv"


def operands(dtype):
    ka, kb = jax.random.split(jax.random.key(0))
    return (jax.random.normal(ka, (2, 8, 16), jnp.float32).astype(dtype),
            jax.random.normal(kb, (16, 32), jnp.float32).astype(dtype))


def plain(a, b):
    return jnp.einsum(SPEC, a, b, preferred_element_type=jnp.float32)


def loss(f):
    return lambda a, b: jnp.sum(jnp.sin(f(SPEC, a, b) if f is mixed_einsum else f(a, b)))


def fp32_matmuls_in_gradient(f) -> int:
    a, b = operands(jnp.bfloat16)
    text = jax.jit(jax.grad(loss(f), argnums=(0, 1))).lower(a, b).as_text("hlo", debug_info=True)
    return len(hlo_audit.fp32_matmuls(hlo_text.parse(text), "bfloat16"))


def test_forward_is_the_fp32_accumulating_einsum():
    a, b = operands(jnp.bfloat16)
    out = mixed_einsum(SPEC, a, b)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, plain(a, b))


def test_bf16_gradients_run_no_fp32_matmul_where_the_plain_einsum_runs_two():
    assert fp32_matmuls_in_gradient(plain) == 2
    assert fp32_matmuls_in_gradient(mixed_einsum) == 0


def test_bf16_gradients_are_the_bf16_pullback_of_the_rounded_cotangent():
    a, b = operands(jnp.bfloat16)
    grads = jax.grad(loss(mixed_einsum), argnums=(0, 1))(a, b)
    g = jnp.cos(plain(a, b)).astype(jnp.bfloat16)
    want = jax.vjp(lambda a, b: jnp.einsum(SPEC, a, b), a, b)[1](g)
    for got, ref in zip(grads, want, strict=True):
        assert got.dtype == jnp.bfloat16
        np.testing.assert_array_equal(got, ref)
    # and within bf16 rounding of the fp32 gradients
    a32, b32 = (x.astype(jnp.float32) for x in (a, b))
    exact = jax.grad(loss(plain), argnums=(0, 1))(a32, b32)
    for got, ref in zip(grads, exact, strict=True):
        np.testing.assert_allclose(got.astype(jnp.float32), ref, rtol=0.05, atol=0.05)


def test_fp32_operands_give_the_plain_gradients():
    a, b = operands(jnp.float32)
    got = jax.grad(loss(mixed_einsum), argnums=(0, 1))(a, b)
    want = jax.grad(loss(plain), argnums=(0, 1))(a, b)
    for x, y in zip(got, want, strict=True):
        np.testing.assert_array_equal(x, y)
