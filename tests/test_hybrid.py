"""The hybrid token+byte encoder-decoder: masks, packing, gradients, freezing, pretrained parts."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from model_zoo import EncoderDecoder, preset
from model_zoo.interop import hf
from model_zoo.config import ByteEncoderConfig
from model_zoo.model_def import split_params
from tests.hf_reference import CONFIGS, make_hf_t5
from tests.train_helpers import make_trainer

BYTES = ByteEncoderConfig(d_model=24, d_ff=48, num_heads=2, d_kv=12, num_layers=2,
                          vocab_size=64)
HYBRID = preset("t5_1_1_tiny", vocab_size=64, d_model=32, d_ff=64, num_heads=4, d_kv=8,
                byte_encoder=BYTES)
TOK = np.array([[5, 6, 7, 1], [8, 9, 1, 0]], np.int32)
BYT = np.array([[10, 11, 12, 13, 14, 1], [20, 21, 22, 1, 0, 0]], np.int32)
DEC = np.array([[0, 3, 4, 5], [0, 6, 7, 0]], np.int32)


@pytest.fixture(scope="module")
def model():
    return EncoderDecoder(HYBRID, rngs=nnx.Rngs(0))


def test_cross_attention_sees_exactly_the_real_tokens_and_bytes(model):
    logits = model(TOK, DEC, byte_encoder_input_tokens=BYT)
    # more padding on either encoder changes nothing ...
    padded = model(np.pad(TOK, ((0, 0), (0, 3))), DEC,
                   byte_encoder_input_tokens=np.pad(BYT, ((0, 0), (0, 5))))
    np.testing.assert_allclose(padded, logits, atol=1e-5)
    # ... while every real byte and token is attended to
    other_byte = BYT.copy()
    other_byte[1, 2] = 30
    changed = model(TOK, DEC, byte_encoder_input_tokens=other_byte)
    assert np.abs(changed[1] - logits[1]).max() > 1e-4
    np.testing.assert_allclose(changed[0], logits[0], atol=1e-6)
    other_token = TOK.copy()
    other_token[0, 0] = 40
    changed = model(other_token, DEC, byte_encoder_input_tokens=BYT)
    assert np.abs(changed[0] - logits[0]).max() > 1e-4
    keys, _ = model.encoder_keys(TOK, None, BYT)
    assert model.encode(TOK, byte_encoder_input_tokens=BYT).shape == (2, 4 + 6, 32)
    np.testing.assert_array_equal(keys > 0, np.concatenate([TOK > 0, BYT > 0], axis=1))


def test_packed_rows_equal_the_examples_alone(model):
    alone = [model(TOK[i:i + 1, :n], DEC[i:i + 1, :m], byte_encoder_input_tokens=BYT[i:i + 1, :b])
             for i, (n, m, b) in enumerate([(4, 4, 6), (3, 3, 4)])]
    packed = dict(
        encoder_input_tokens=np.array([[5, 6, 7, 1, 8, 9, 1]]),
        encoder_segment_ids=np.array([[1, 1, 1, 1, 2, 2, 2]]),
        encoder_positions=np.array([[0, 1, 2, 3, 0, 1, 2]]),
        byte_encoder_input_tokens=np.array([[10, 11, 12, 13, 14, 1, 20, 21, 22, 1, 0]]),
        byte_encoder_segment_ids=np.array([[1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 0]]),
        byte_encoder_positions=np.array([[0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 0]]),
        decoder_input_tokens=np.array([[0, 3, 4, 5, 0, 6, 7]]),
        decoder_segment_ids=np.array([[1, 1, 1, 1, 2, 2, 2]]),
        decoder_positions=np.array([[0, 1, 2, 3, 0, 1, 2]]))
    logits = model(**packed)
    np.testing.assert_allclose(logits[0, :4], alone[0][0], atol=1e-5)
    np.testing.assert_allclose(logits[0, 4:], alone[1][0], atol=1e-5)


def _batch():
    tgt = np.concatenate([DEC[:, 1:], np.ones((2, 1), np.int32)], axis=1)
    return {"encoder_input_tokens": np.tile(TOK, (4, 1)),
            "byte_encoder_input_tokens": np.tile(BYT, (4, 1)),
            "decoder_input_tokens": np.tile(DEC, (4, 1)),
            "decoder_target_tokens": np.tile(tgt, (4, 1))}


def _changed(before, after, key) -> bool:
    return any(not np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(before[key]), jax.tree.leaves(after[key]), strict=True))


@pytest.mark.parametrize("frozen,ici,rules,dtype", [
    (False, {"fsdp": 2}, "fsdp", "bfloat16"),
    (True, {"data": 1}, "data_parallel", "float32")])
def test_gradients_reach_both_encoders_unless_frozen(frozen, ici, rules, dtype):
    cfg = HYBRID.replace(frozen=("encoder", "byte_shared", "byte_encoder") if frozen else (),
                         byte_encoder=BYTES)
    # weight decay would move frozen params too, were their updates not dropped
    trainer = make_trainer(ici=ici, rules=rules, dtype=dtype, model_cfg=cfg,
                           optimizer="adamw", lr=1e-2, weight_decay=0.1)
    state = trainer.init_state()
    before = jax.device_get(state.params)
    state, metrics = trainer.train_step(state, _batch())
    after = jax.device_get(state.params)
    assert np.isfinite(metrics["loss"])
    for trained in ("decoder", "shared", "lm_head", "byte_projection"):
        assert _changed(before, after, trained), trained
    for name in ("encoder", "byte_encoder", "byte_shared"):
        assert _changed(before, after, name) != frozen, name


def test_parts_load_from_hf_t5_and_byt5_directories(tmp_path):
    from runner.initial_params import initial_params

    t5_dir, byt5_dir = tmp_path / "t5", tmp_path / "byt5"
    make_hf_t5("gated_untied").save_pretrained(t5_dir)
    make_hf_t5("byt5", seed=1).save_pretrained(byt5_dir)
    byt5 = CONFIGS["byt5"]
    cfg = hf.read_config(str(t5_dir)).replace(byte_encoder=ByteEncoderConfig(
        d_model=byt5["d_model"], d_ff=byt5["d_ff"], num_heads=byt5["num_heads"],
        d_kv=byt5["d_kv"], num_layers=byt5["num_layers"],
        relative_attention_num_buckets=byt5["relative_attention_num_buckets"],
        relative_attention_max_distance=byt5["relative_attention_max_distance"]))
    trainer = make_trainer(model_cfg=cfg)
    run = types.SimpleNamespace(model=cfg, initial_checkpoint_path=str(t5_dir),
                                byte_encoder_checkpoint_path=str(byt5_dir))
    parts = jax.device_get(initial_params(run, trainer))
    assert sorted(parts) == ["byte_encoder", "byte_shared", "decoder", "encoder", "lm_head",
                             "shared"]
    _, t5 = split_params(hf.load(str(t5_dir)))
    _, byte = split_params(hf.load(str(byt5_dir)))
    for got, want in [(parts["encoder"], t5["encoder"]), (parts["decoder"], t5["decoder"]),
                      (parts["byte_encoder"], byte["encoder"]),
                      (parts["byte_shared"], byte["shared"])]:
        jax.tree.map(np.testing.assert_array_equal, got, jax.device_get(want))

    wrong = cfg.replace(byte_encoder=ByteEncoderConfig(d_model=16, d_ff=32, num_heads=2,
                                                       d_kv=8, num_layers=1))
    run = types.SimpleNamespace(model=wrong, initial_checkpoint_path=None,
                                byte_encoder_checkpoint_path=str(byt5_dir))
    with pytest.raises(ValueError, match=r"byte_encoder_checkpoint_path=.*d_model"):
        initial_params(run, make_trainer(model_cfg=wrong))


def test_missing_or_unexpected_byte_inputs_are_refused(model):
    with pytest.raises(ValueError, match="needs byte_encoder_input_tokens"):
        model(TOK, DEC)
    plain = EncoderDecoder(HYBRID.replace(byte_encoder=None), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="has no byte encoder"):
        plain(TOK, DEC, byte_encoder_input_tokens=BYT)
    with pytest.raises(ValueError, match="byte_encoder_input_tokens has batch 1"):
        model(TOK, DEC, byte_encoder_input_tokens=BYT[:1])
    with pytest.raises(ValueError, match="ByteEncoderConfig.num_layers=0"):
        ByteEncoderConfig(num_layers=0)
    assert jnp.all(jnp.isfinite(model(TOK, DEC, byte_encoder_input_tokens=BYT)))
