"""t5x's loss normalizing factors: against t5x's definition written out per example, with
1 and 4 microbatches of unequal token counts giving the same loss and grads."""

import gin
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.batches import padded_batch
from tests.train_helpers import TINY, make_trainer
from training.loss_normalization import factor_and_weights
from training.loss_scale import LossScaleConfig
from training.schedules import ScheduleConfig, make_schedule
from training.step import LossConfig, make_train_step

Z_LOSS = 1e-4


def _batch():
    enc, dec, tgt = padded_batch(64, 8, 12, 10, seed=3)
    # rows of 10, 7, 9, 6, 8, 10, 7, 9 targets: the 4 microbatches (rows j, j+4) hold
    # 18, 17, 16, 15 of them
    weights = (tgt > 0).astype(np.float32)
    weights[1, 0] = 0.0  # a weight that is not (id > 0)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
            "decoder_target_tokens": tgt, "decoder_loss_weights": weights}


def _reference_loss(logits, batch: dict, factor):
    """t5x's loss, one example at a time: token cross entropy + z-loss, then normalized.
    `batch` holds numpy arrays."""
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target = jnp.take_along_axis(logits, batch["decoder_target_tokens"][..., None], -1)[..., 0]
    token = log_z - target + Z_LOSS * log_z ** 2
    w = batch["decoder_loss_weights"]
    per_example = [jnp.sum(token[b] * w[b]) for b in range(w.shape[0])]
    if factor == "AVERAGE_PER_SEQUENCE":
        means = [s / w[b].sum() for b, s in enumerate(per_example) if w[b].sum() > 0]
        return sum(means) / len(means)
    divisor = {"NUM_REAL_TARGET_TOKENS": float(w.sum()),
               "NUM_TOTAL_TARGET_TOKENS": float(w.size)}.get(factor, factor)
    return sum(per_example) / divisor


def _grad_recorder():
    """An 'optimizer' that keeps the step's gradient as its state and updates nothing."""
    return optax.GradientTransformation(
        lambda p: jax.tree.map(jnp.zeros_like, p),
        lambda g, s, p=None: (jax.tree.map(jnp.zeros_like, g), g))


FACTORS = ("NUM_REAL_TARGET_TOKENS", "NUM_TOTAL_TARGET_TOKENS", "AVERAGE_PER_SEQUENCE", 233472.0)


@pytest.fixture(scope="module")
def results():
    """{(factor, 0): the reference (loss, grads), (factor, 1 or 4): the train step's
    (metrics, grads) with that many microbatches}, from one jit (a single compile)."""
    trainer = make_trainer(batch_size=8, model_cfg=TINY.replace(num_encoder_layers=1,
                                                                num_decoder_layers=1))
    host = _batch()
    batch = {k: jnp.asarray(v) for k, v in host.items()}
    state = trainer.init_state()
    state.opt_state = jax.tree.map(jnp.zeros_like, state.params)
    schedule = make_schedule(ScheduleConfig(kind="constant", learning_rate=1.0, warmup_steps=0))
    steps = {(f, m): make_train_step(trainer.model_def, _grad_recorder(), schedule,
                                     LossConfig(z_loss=Z_LOSS, loss_normalizing_factor=f),
                                     LossScaleConfig(), microbatches=m, deterministic=True)
             for f in FACTORS for m in (1, 4)}

    def everything(state, batch):
        def logits_of(p):
            return trainer.model_def.bind(p)(batch["encoder_input_tokens"],
                                             batch["decoder_input_tokens"], deterministic=True)

        out = {(str(f), 0): jax.value_and_grad(
            lambda p, f=f: _reference_loss(logits_of(p), host, f))(state.params) for f in FACTORS}
        for (f, m), step in steps.items():
            new, metrics = step(state, batch)
            out[(str(f), m)] = (metrics, new.opt_state)  # the recorder's state: the grads
        return out

    return jax.device_get(jax.jit(everything)(state, batch))


@pytest.mark.parametrize("factor", FACTORS)
def test_normalization_matches_t5x_definition_with_1_and_4_microbatches(results, factor):
    factor = str(factor)
    want_loss, want_grads = results[(factor, 0)]
    per_token, _ = results[("NUM_REAL_TARGET_TOKENS", 0)]
    scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(want_grads))
    for micro in (1, 4):
        metrics, grads = results[(factor, micro)]
        np.testing.assert_allclose(metrics["normalized_loss"], want_loss, rtol=2e-5)
        # the per-token mean is reported whatever the normalization
        np.testing.assert_allclose(metrics["loss"], per_token, rtol=2e-5)
        assert float(metrics["tokens"]) == _batch()["decoder_loss_weights"].sum()
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                             atol=1e-5 * scale),
                     grads, want_grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * scale),
                 results[(factor, 4)][1], results[(factor, 1)][1])


def _python_per_segment(weights, segment_ids):
    out = np.zeros_like(weights)
    for b in range(weights.shape[0]):
        t = 0
        while t < weights.shape[1]:
            end = t
            while end < weights.shape[1] and segment_ids[b, end] == segment_ids[b, t]:
                end += 1
            total = weights[b, t:end].sum()
            if total > 0:
                out[b, t:end] = weights[b, t:end] / total
            t = end
    return out


def test_average_per_sequence_of_packed_segments():
    segment_ids = np.array([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1],
                            [1, 2, 2, 2, 2, 2, 2, 0]], np.int32)
    tokens = np.where(segment_ids > 0, 5, 0).astype(np.int32)
    weights = (tokens > 0).astype(np.float32)
    weights[0, 5] = 0.0  # segment 3 of row 0 carries no weight: not a sequence
    batch = {"decoder_target_tokens": tokens, "decoder_loss_weights": weights,
             "decoder_segment_ids": segment_ids}
    factor, got = factor_and_weights("AVERAGE_PER_SEQUENCE", batch)
    want = _python_per_segment(weights, segment_ids)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
    np.testing.assert_allclose(float(factor), 5.0, rtol=1e-6)  # 2 + 1 + 2 sequences


def test_bad_factor_names_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"LossConfig.loss_normalizing_factor='NUM_TOKENS'.*"
                                         r"AVERAGE_PER_SEQUENCE"):
        LossConfig(loss_normalizing_factor="NUM_TOKENS")
    for bad in (0, -1.0, float("inf"), True, None):
        with pytest.raises(ValueError, match="positive finite number"):
            LossConfig(loss_normalizing_factor=bad)
    assert LossConfig(loss_normalizing_factor=233472).loss_normalizing_factor == 233472.0


def test_gin_binds_the_factor():
    from runner import configurables  # noqa: F401  (registers training.LossConfig)

    try:
        for text, want in (("'AVERAGE_PER_SEQUENCE'", "AVERAGE_PER_SEQUENCE"),
                           ("233472", 233472.0)):
            gin.clear_config()
            gin.parse_config(f"training.LossConfig.loss_normalizing_factor = {text}")
            assert gin.get_configurable("training.LossConfig")().loss_normalizing_factor == want
    finally:
        gin.clear_config()
