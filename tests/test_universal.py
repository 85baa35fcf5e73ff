"""Universal Transformer: shared recurrence, ACT, training, meshes, decoding, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model_zoo import EncoderDecoder, ModelConfig, preset
from model_zoo.config import UniversalConfig
from model_zoo.decoding import DecodeConfig, decode
from model_zoo.model_def import model_def
from model_zoo.universal import timestep_signal
from tests.batches import padded_batch
from tests.train_helpers import TINY, copy_batch, make_trainer

UT = TINY.replace(num_encoder_layers=1, num_decoder_layers=1,
                  universal=UniversalConfig(steps=3))
ACT = UT.replace(universal=UniversalConfig(steps=4, act=True, act_threshold=0.9,
                                           ponder_tau=0.05))


def n_params(cfg):
    abstract = model_def(lambda r: EncoderDecoder(cfg, rngs=r)).abstract_params()
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))


def test_parameter_count_does_not_depend_on_steps():
    counts = {n_params(UT.replace(universal=UniversalConfig(steps=t))) for t in (1, 3, 12)}
    assert len(counts) == 1
    assert n_params(UT) < n_params(TINY.replace(num_encoder_layers=3, num_decoder_layers=3))


def test_presets_are_matched_to_t5_1_1_base():
    from model_zoo.flops import forward_flops_per_example as flops

    base = preset("t5_1_1_base")
    assert abs(n_params(preset("universal_base_param_matched")) / n_params(base) - 1) < 0.01
    assert flops(preset("universal_base_flop_matched"), 512, 114) == flops(base, 512, 114)


def test_scanned_steps_equal_applying_the_shared_block_by_hand():
    model = EncoderDecoder(UT, rngs=nnx.Rngs(0))
    stack = model.encoder.layers
    x = jax.random.normal(jax.random.key(1), (2, 7, UT.d_model))
    pos = jnp.arange(7)[None]
    bias = model.encoder.relative_position_bias(pos, pos)
    mask = jnp.ones((2, 1, 7, 7), bool)
    got, _ = stack.forward(x, bias, mask)
    signal = timestep_signal(3, UT.d_model)
    h = x
    for t in range(3):
        h = stack.block(h + signal[t], bias, mask)
    np.testing.assert_allclose(np.asarray(got), np.asarray(h), atol=1e-5)


def test_act_weights_sum_to_one_and_halted_tokens_freeze():
    model = EncoderDecoder(ACT, rngs=nnx.Rngs(0))
    stack = model.encoder.layers
    x = jax.random.normal(jax.random.key(2), (3, 9, ACT.d_model))
    signal = timestep_signal(4, ACT.d_model)

    def apply_block(h, t, _):  # record each step's input state, then transform it
        return jnp.tanh(h * 1.3 + 0.1), h - signal[t]

    out, states, aux = stack.recur(x, apply_block)
    weights = np.asarray(aux["halting_weights"])            # [steps, batch, len]
    np.testing.assert_allclose(weights.sum(0), 1.0, atol=1e-6)
    halted_at = np.argmax(np.cumsum(weights > 0, 0) == (weights > 0).sum(0), axis=0)
    states = np.asarray(states)
    for t in range(1, 4):  # after its last weighted step a token's state never changes
        frozen = t > halted_at + 1
        np.testing.assert_allclose(states[t][frozen], states[t - 1][frozen], atol=1e-6)
        moved = np.abs(states[t] - states[t - 1]).max(-1) > 1e-3
        assert not np.any(moved & frozen) and np.any(moved)  # others still update
    assert np.all(np.isfinite(np.asarray(out)))
    assert 1.0 <= float(aux["ponder_steps"]) <= 4.0


def test_ponder_cost_reaches_the_loss_with_gradients():
    model = EncoderDecoder(ACT, rngs=nnx.Rngs(0))
    enc, dec, _ = padded_batch(64, 2, 8, 6)
    from model_zoo.model_def import split_params

    mdef, params = split_params(model)

    def aux_loss(p):
        return mdef.bind(p)(enc, dec, return_aux=True)[1]["loss"]

    value, grads = jax.jit(jax.value_and_grad(aux_loss))(params)
    assert float(value) > 0
    assert float(jnp.abs(grads["encoder"]["layers"]["halting_kernel"]).sum()) > 0
    trainer = make_trainer(model_cfg=ACT)
    state, metrics = trainer.train_step(trainer.init_state(), copy_batch(8))
    assert float(metrics["ponder_loss"]) > 0 and "encoder_ponder_steps" in metrics


def test_tiny_ut_learns_to_copy():
    trainer = make_trainer(model_cfg=UT, optimizer="adamw", lr=1e-2)
    state = trainer.init_state()
    batch = copy_batch(8, length=8)
    for _ in range(80):
        state, metrics = trainer.train_step(state, batch)
    assert float(metrics["loss"]) < 0.5, float(metrics["loss"])


@pytest.mark.parametrize("cfg", [ACT], ids=["act"])  # ACT runs the plain recurrence too
def test_same_loss_on_meshes_1_and_2x4(cfg):
    losses = []
    for ici, rules in (({"data": 1}, "data_parallel"), ({"data": 2, "tensor": 4}, "tensor")):
        trainer = make_trainer(ici, rules, model_cfg=cfg, optimizer="adamw", lr=3e-3,
                               eps=1e-4)
        state = trainer.init_state()
        for _ in range(2):
            state, metrics = trainer.train_step(state, copy_batch(8))
        losses.append(float(metrics["loss"]))
    assert abs(losses[0] - losses[1]) < 1e-5


@pytest.mark.parametrize("cfg", [UT, ACT], ids=["ut", "act"])
def test_greedy_with_cache_equals_full_recomputation(cfg):
    from model_zoo.model_def import split_params

    model = EncoderDecoder(cfg, rngs=nnx.Rngs(5))
    mdef, params = split_params(model)
    forward = jax.jit(lambda p, e, d: mdef.bind(p)(e, d))
    enc = padded_batch(64, 2, 9, 4, seed=3)[0]
    got = np.asarray(decode(model, enc, DecodeConfig(6)))
    out = np.zeros((2, 6), np.int32)
    for i in range(6):
        dec = np.concatenate([np.zeros((2, 1), np.int32), out[:, :-1]], axis=1)
        out[:, i] = np.asarray(jnp.argmax(forward(params, enc, dec)[:, i], -1))
        out[:, i] = np.where((out[:, :i] == 1).any(1), 0, out[:, i])
    np.testing.assert_array_equal(got, out)


@pytest.mark.parametrize("kwargs,match", [
    (dict(steps=0), "steps=0"),
    (dict(act=True, act_threshold=1.5), r"act_threshold=1.5.*\(0, 1\]"),
    (dict(act=True, act_threshold=0.0), "act_threshold=0.0"),
])
def test_bad_universal_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UniversalConfig(**kwargs)


def test_universal_config_round_trips_through_json():
    import dataclasses
    import json

    data = json.loads(json.dumps(dataclasses.asdict(ACT)))
    assert ModelConfig(**data) == ACT


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_act_trains_in_low_precision(dtype):
    trainer = make_trainer(model_cfg=ACT, dtype=dtype, optimizer="adamw", lr=3e-3)
    state = trainer.init_state()
    for _ in range(3):
        state, metrics = trainer.train_step(state, copy_batch(8))
    assert np.isfinite(float(metrics["loss"])) and int(metrics["skipped"]) == 0
    assert all(np.all(np.isfinite(np.asarray(p))) for p in jax.tree.leaves(state.params))
