"""Dropout, remat policies and attention kernels: options that must not change the maths."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model_zoo import EncoderDecoder, masks, preset
from model_zoo.attention import attention_weights_einsum, fused_attention
from model_zoo.model_def import split_params
from model_zoo.losses import cross_entropy_loss
from tests.batches import padded_batch

CFG = preset("t5_1_1_tiny", vocab_size=64, d_model=32, d_ff=64, num_heads=4, d_kv=8)


def left_padded(tokens):
    """Rows with their padding moved to the front."""
    return np.stack([np.roll(row, int((row == 0).sum())) for row in tokens])


def loss_and_grads(cfg, inputs=lambda enc: enc, **call):
    mdef, params = split_params(EncoderDecoder(cfg, rngs=nnx.Rngs(0)))
    enc, dec, tgt = padded_batch(cfg.vocab_size, 3, 12, 8)  # inputs 12, 7 and 8 long
    enc = inputs(enc)

    def f(p):
        logits = mdef.bind(p)(enc, dec, **call)
        return cross_entropy_loss(logits, tgt).loss

    return jax.jit(jax.value_and_grad(f))(params)


def assert_same(a, b, atol):
    np.testing.assert_allclose(a[0], b[0], atol=atol)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=atol), a[1], b[1])


@pytest.mark.parametrize("policy", ["full", "dots", "save_attention_out"])
def test_remat_policies_give_the_same_gradients(policy):
    assert_same(loss_and_grads(CFG.replace(remat_policy=policy)), loss_and_grads(CFG), 1e-6)


def test_xla_attention_kernel_equals_einsum():
    assert_same(loss_and_grads(CFG.replace(attention_impl="xla")), loss_and_grads(CFG), 2e-5)


def test_fused_kernels_take_the_mask_array_when_padding_is_not_trailing():
    xla = loss_and_grads(CFG.replace(attention_impl="xla"), left_padded)
    assert_same(xla, loss_and_grads(CFG, left_padded), 2e-5)
    # one attention call: the key lengths would attend to the padding here
    enc, _, _ = padded_batch(64, 3, 12, 8)
    mask = masks.encoder_mask(jnp.asarray(left_padded(enc)), None)
    q, k, v = jax.random.normal(jax.random.key(0), (3, 3, 12, 2, 8))
    want = attention_weights_einsum(q, k, v, None, mask.dense, 0.0, None, True)
    np.testing.assert_allclose(fused_attention(q, k, v, None, mask, "xla"), want, atol=1e-5)
    forced = dataclasses.replace(mask, trailing=jnp.asarray(True))
    assert not np.allclose(fused_attention(q, k, v, None, forced, "xla"), want, atol=1e-3)


def test_mask_hints_equal_the_mask_array():
    enc, _, _ = padded_batch(64, 3, 12, 8)
    mask = masks.encoder_mask(jnp.asarray(enc), None)
    lengths = (enc > 0).sum(-1)
    np.testing.assert_array_equal(mask.key_lengths, [12, 7, 8])
    assert bool(mask.trailing) and not mask.causal
    np.testing.assert_array_equal(
        mask.dense[:, 0, 0], np.arange(12)[None, :] < lengths[:, None])
    assert not bool(masks.encoder_mask(jnp.asarray(left_padded(enc)), None).trailing)
    causal = masks.decoder_mask(5, None)
    assert causal.causal and causal.key_lengths is None
    np.testing.assert_array_equal(causal.dense[0, 0], np.tril(np.ones((5, 5), bool)))
    packed = masks.encoder_mask(jnp.asarray(enc), jnp.asarray((enc > 0).astype(np.int32)))
    assert packed.key_lengths is None and not packed.causal  # segments: the array only


@pytest.mark.skipif(jax.devices()[0].platform != "gpu",
                    reason="cuDNN attention runs on NVIDIA GPUs (tools/launch/gpu_checks.sh)")
def test_cudnn_attention_kernel_equals_einsum_in_bf16():
    cfg = preset("t5_1_1_tiny", vocab_size=256, d_model=128, d_ff=256, num_heads=2, d_kv=64,
                 dtype="bfloat16")

    def run(impl):
        mdef, params = split_params(EncoderDecoder(cfg.replace(attention_impl=impl),
                                                   rngs=nnx.Rngs(0)))
        enc, dec, tgt = padded_batch(cfg.vocab_size, 4, 128, 64)
        return jax.jit(jax.value_and_grad(
            lambda p: cross_entropy_loss(mdef.bind(p)(enc, dec), tgt).loss))(params)

    (loss, grads), (ref_loss, ref_grads) = run("cudnn"), run("einsum")
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-2)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=0.1, atol=2e-2 * float(
        np.abs(y).max())), grads, ref_grads)


def test_dropout_is_seeded_and_off_when_deterministic():
    model = EncoderDecoder(CFG.replace(dropout_rate=0.3), rngs=nnx.Rngs(0))
    mdef, params = split_params(model)
    enc, dec, _ = padded_batch(64, 2, 10, 8)
    train = jax.jit(lambda p, k: mdef.bind(p)(enc, dec, deterministic=False, dropout_rng=k))
    key = jax.random.key(1)
    a, b = train(params, key), train(params, key)
    c = train(params, jax.random.key(2))
    d = jax.jit(lambda p: mdef.bind(p)(enc, dec))(params)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, d)
    with pytest.raises(ValueError, match="needs a dropout_rng"):
        model(enc, dec, deterministic=False)
