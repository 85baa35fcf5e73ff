"""Cross entropy with z-loss and label smoothing: values and the hand-written gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model_zoo.losses import cross_entropy_loss, softmax_cross_entropy


def reference(logits, targets, z_loss, smoothing):
    """Plain autodiff-able definition: -sum soft * log_softmax - const + z * logZ^2."""
    v = logits.shape[-1]
    conf, low = 1 - smoothing, smoothing / (v - 1)
    soft = jax.nn.one_hot(targets, v) * (conf - low) + low
    const = -(conf * np.log(conf) + (v - 1) * low * np.log(low + 1e-20)) if smoothing else 0.0
    log_z = jax.nn.logsumexp(logits, -1)
    ce = -jnp.sum(soft * jax.nn.log_softmax(logits), -1) - const
    return ce + z_loss * log_z ** 2


@pytest.mark.parametrize("z_loss,smoothing", [(0.0, 0.0), (1e-4, 0.0), (1e-2, 0.1)])
def test_value_and_gradient_match_autodiff(z_loss, smoothing):
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(3, 5, 11)) * 4, jnp.float32)
    targets = jnp.asarray(rng.integers(0, 11, (3, 5)))
    weights = jnp.asarray(rng.integers(0, 2, (3, 5)), jnp.float32)

    def ours(lg):
        return cross_entropy_loss(lg, targets, weights, z_loss=z_loss,
                                  label_smoothing=smoothing).loss

    def theirs(lg):
        return jnp.sum(reference(lg, targets, z_loss, smoothing) * weights)

    np.testing.assert_allclose(ours(logits), theirs(logits), rtol=1e-5)
    np.testing.assert_allclose(jax.grad(ours)(logits), jax.grad(theirs)(logits), atol=1e-6)


def test_perfect_prediction_with_smoothing_costs_zero():
    v, s = 7, 0.1
    soft = np.full(v, s / (v - 1)); soft[3] = 1 - s  # noqa: E702
    logits = jnp.asarray(np.log(soft), jnp.float32)[None]
    total, _ = softmax_cross_entropy(logits, jnp.array([3]), 0.0, s)
    assert abs(float(total[0])) < 1e-5


def test_large_logits_stay_finite():
    logits = jnp.array([[1e4, -1e4, 0.0]], jnp.float32)
    sums = cross_entropy_loss(logits, jnp.array([1]), jnp.ones(1), z_loss=1e-4)
    g = jax.grad(lambda lg: cross_entropy_loss(lg, jnp.array([1]), jnp.ones(1)).loss)(logits)
    assert np.isfinite(float(sums.loss)) and np.all(np.isfinite(g))


def test_z_loss_and_accuracy_are_reported():
    logits = jnp.array([[2.0, 0.0], [0.0, 2.0]])
    sums = cross_entropy_loss(logits, jnp.array([0, 0]), jnp.ones(2), z_loss=0.5)
    log_z = float(jax.nn.logsumexp(jnp.array([2.0, 0.0])))
    assert float(sums.correct) == 1.0 and float(sums.weight) == 2.0
    np.testing.assert_allclose(float(sums.z_loss), 2 * 0.5 * log_z ** 2, rtol=1e-6)


@pytest.mark.parametrize("smoothing,scale,chunk", [(0.0, 1.0, 4), (0.1, 0.25, 7)])
def test_chunked_projection_loss_equals_the_plain_one(smoothing, scale, chunk):
    from model_zoo.chunked_cross_entropy import chunked_cross_entropy_loss

    rng = np.random.default_rng(0)
    hidden = jnp.asarray(rng.normal(size=(3, 10, 16)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(16, 50)) * 0.3, jnp.float32)
    targets = jnp.asarray(rng.integers(0, 50, (3, 10)), jnp.int32)
    weights = jnp.asarray(rng.random((3, 10)) > 0.2, jnp.float32)

    def plain(h, k):
        logits = jnp.einsum("btd,dv->btv", h, k) * scale
        sums = cross_entropy_loss(logits, targets, weights, z_loss=1e-3,
                                  label_smoothing=smoothing)
        return sums.loss, sums

    def chunked(h, k):  # 10 positions: chunk 7 pads the last chunk
        sums = chunked_cross_entropy_loss(h, k, targets, weights, scale=scale, chunk=chunk,
                                          z_loss=1e-3, label_smoothing=smoothing)
        return sums.loss, sums

    (_, want), want_grads = jax.value_and_grad(plain, (0, 1), has_aux=True)(hidden, kernel)
    (_, got), got_grads = jax.jit(jax.value_and_grad(chunked, (0, 1), has_aux=True))(
        hidden, kernel)
    for field in ("loss", "z_loss", "correct", "weight"):
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=1e-5)
    for g, w in zip(got_grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_train_step_with_the_chunked_loss_equals_the_plain_one():
    from tests.train_helpers import copy_batch, make_trainer
    from training.step import LossConfig

    batch = copy_batch(8)
    results = []
    for loss in (LossConfig(), LossConfig(vocab_chunk=5)):
        trainer = make_trainer(ici={"data": 2, "tensor": 2}, rules="tensor", loss=loss)
        state, metrics = trainer.train_step(trainer.init_state(), batch)
        results.append((metrics, jax.device_get(state.params)))
    (m0, p0), (m1, p1) = results
    for key in ("loss", "z_loss", "accuracy", "grad_norm"):
        np.testing.assert_allclose(m1[key], m0[key], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), p1, p0)
    with pytest.raises(ValueError, match="vocab_chunk=-1"):
        LossConfig(vocab_chunk=-1)
