"""Decoding with the KV cache: greedy vs full recomputation and HF generate, beam, sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import partitioning
from model_zoo import EncoderDecoder, preset
from model_zoo.interop import hf
from model_zoo.axes import activation_rules
from model_zoo.decoding import DecodeConfig, decode, filter_logits
from model_zoo.model_def import split_params
from tests.batches import padded_batch
from tests.hf_reference import make_hf_t5

CFG = preset("t5_1_1_tiny", vocab_size=64, d_model=32, d_ff=64, num_heads=4, d_kv=8,
             num_encoder_layers=2, num_decoder_layers=3)
T = 10


@pytest.fixture(scope="module")
def model():
    return EncoderDecoder(CFG, rngs=nnx.Rngs(4))


@pytest.fixture(scope="module")
def enc():
    return padded_batch(CFG.vocab_size, 3, 12, 4, seed=2)[0]


def full_recompute_greedy(model, enc, steps):
    """Argmax decoding that re-runs the whole decoder every step (no cache)."""
    mdef, params = split_params(model)
    forward = jax.jit(lambda p, e, d: mdef.bind(p)(e, d))
    out = np.zeros((enc.shape[0], steps), np.int32)
    done = np.zeros(enc.shape[0], bool)
    for i in range(steps):
        # decoder inputs padded to full length: causal masking makes the tail irrelevant
        dec = np.concatenate([np.zeros((enc.shape[0], 1), np.int32), out[:, :-1]], axis=1)
        token = np.asarray(jnp.argmax(forward(params, enc, dec)[:, i], -1))
        token = np.where(done, 0, token)
        out[:, i] = token
        done |= token == 1
    return out


def test_greedy_with_cache_equals_full_recomputation(model, enc):
    got = np.asarray(jax.jit(lambda e: decode(model, e, DecodeConfig(T)))(enc))
    np.testing.assert_array_equal(got, full_recompute_greedy(model, enc, T))


def test_beam_of_one_equals_greedy(model, enc):
    greedy = decode(model, enc, DecodeConfig(T))
    beam, _ = decode(model, enc, DecodeConfig(T, method="beam", num_beams=1,
                                              length_penalty=0.0))
    np.testing.assert_array_equal(np.asarray(beam), np.asarray(greedy))


def sequence_logprob(model, enc, seqs):
    dec = np.concatenate([np.zeros((seqs.shape[0], 1), np.int32), seqs[:, :-1]], axis=1)
    logp = jax.nn.log_softmax(model(enc, dec), -1)
    picked = np.take_along_axis(np.asarray(logp), seqs[..., None], -1)[..., 0]
    return (picked * (seqs > 0)).sum(1), (seqs > 0).sum(1)


def test_beam_scores_are_length_normalised_logprobs(model, enc):
    cfg = DecodeConfig(T, method="beam", num_beams=4, length_penalty=0.6)
    seqs, scores = decode(model, enc, cfg)
    seqs, scores = np.asarray(seqs), np.asarray(scores)
    logprob, length = sequence_logprob(model, enc, seqs)
    finished = (seqs == 1).any(1)
    penalty = ((5.0 + np.where(finished, length, T)) / 6.0) ** 0.6
    np.testing.assert_allclose(scores, logprob / penalty, rtol=1e-4, atol=1e-4)


def test_sampling_is_seeded_and_top_k_1_is_greedy(model, enc):
    greedy = np.asarray(decode(model, enc, DecodeConfig(T)))
    k1 = decode(model, enc, DecodeConfig(T, method="sample", top_k=1), jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(k1), greedy)
    cfg = DecodeConfig(T, method="sample", temperature=2.0, top_p=0.9)
    a = decode(model, enc, cfg, jax.random.key(1))
    b = decode(model, enc, cfg, jax.random.key(1))
    c = decode(model, enc, cfg, jax.random.key(2))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_top_p_and_top_k_filters():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    kept = np.asarray(filter_logits(logits, 0, 0.7)) > -1e6
    assert kept.tolist() == [[True, True, False, False]]
    kept = np.asarray(filter_logits(logits, 3, 1.0)) > -1e6
    assert kept.tolist() == [[True, True, True, False]]


def test_greedy_matches_hf_generate(tmp_path):
    ref = make_hf_t5("gated_untied", seed=3)
    ref.save_pretrained(tmp_path)
    ours = hf.load(str(tmp_path))
    enc = padded_batch(96, 3, 14, 4, seed=5)[0]
    with torch.no_grad():
        want = ref.generate(input_ids=torch.tensor(enc, dtype=torch.long),
                            attention_mask=torch.tensor(enc > 0, dtype=torch.long),
                            max_new_tokens=T, do_sample=False, num_beams=1,
                            decoder_start_token_id=0, eos_token_id=1, pad_token_id=0,
                            use_cache=False).numpy()  # HF cache breaks on uneven depths
    got = np.asarray(decode(ours, enc, DecodeConfig(T)))
    want = want[:, 1:]  # drop the decoder start id
    np.testing.assert_array_equal(got[:, :want.shape[1]], want)
    assert np.all(got[:, want.shape[1]:] == 0)


def test_decoding_on_a_sharded_mesh(model, enc):
    mesh = partitioning.make_mesh(partitioning.MeshConfig(ici={"data": 1, "tensor": 4}),
                                  devices=jax.devices()[:4])
    rules = partitioning.rule_set("tensor")
    mdef, params = split_params(model)
    params = jax.device_put(params, partitioning.tree_shardings(mdef.logical_axes(), params,
                                                                rules, mesh))
    with jax.set_mesh(mesh), activation_rules(partitioning.activation_resolver(rules, mesh)):
        got = jax.jit(lambda p, e: decode(mdef.bind(p), e, DecodeConfig(T)))(params, enc)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(decode(model, enc,
                                                                     DecodeConfig(T))))


def test_top_k_beyond_the_vocabulary_is_refused(model, enc):
    with pytest.raises(ValueError, match="top_k=65.*vocab_size=64"):
        decode(model, enc, DecodeConfig(T, method="sample", top_k=65), jax.random.key(0))


def test_bad_decode_config():
    with pytest.raises(ValueError, match="method='topk'"):
        DecodeConfig(method="topk")
    with pytest.raises(ValueError, match="top_p=0"):
        DecodeConfig(top_p=0.0)
