"""t5pod T5 against HF transformers T5ForConditionalGeneration (the golden reference)."""

import numpy as np
import pytest
import torch
from transformers import T5ForConditionalGeneration

from model_zoo.interop import hf
from model_zoo.losses import cross_entropy_loss
from tests.batches import padded_batch
from tests.hf_reference import CONFIGS, hf_logits, hf_loss, make_hf_t5

TOL = 2e-4


@pytest.fixture(scope="module", params=["gated_untied", "relu_tied"])  # byt5: test_byt5
def pair(request, tmp_path_factory):
    ref = make_hf_t5(request.param)
    path = tmp_path_factory.mktemp(request.param)
    ref.save_pretrained(path)
    return request.param, ref, hf.load(str(path)), path


def test_config_is_read(pair):
    name, _, model, _ = pair
    want = CONFIGS[name]
    cfg = model.config
    activations = {"relu": ("relu",), "gated-gelu": ("gelu", "linear")}  # HF's T5 meaning
    assert (cfg.mlp_activations, cfg.tie_word_embeddings) == (
        activations[want["feed_forward_proj"]], want["tie_word_embeddings"])
    assert (cfg.num_encoder_layers, cfg.num_decoder_layers) == (
        want["num_layers"], want["num_decoder_layers"])


def test_logits_and_loss_match_hf(pair):
    _, ref, model, _ = pair
    enc, dec, tgt = padded_batch(model.config.vocab_size, batch=3, input_len=30, target_len=26)
    want = hf_logits(ref, enc, dec, enc_mask=(enc > 0).astype(np.int64))
    got = np.asarray(model(encoder_input_tokens=enc, decoder_input_tokens=dec))
    assert got.dtype == np.float32 and got.shape == want.shape
    valid = tgt > 0
    np.testing.assert_allclose(got[valid], want[valid], atol=TOL, rtol=0)

    sums = cross_entropy_loss(got, tgt, (tgt > 0), z_loss=0.0)
    ours = float(sums.loss / sums.weight)
    assert abs(ours - hf_loss(ref, enc, dec, tgt, (enc > 0).astype(np.int64))) < TOL


def test_export_round_trip_gives_hf_the_same_logits(pair, tmp_path):
    _, ref, model, _ = pair
    hf.save(model, str(tmp_path))
    exported = T5ForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
    enc, dec, tgt = padded_batch(model.config.vocab_size, batch=2, input_len=18, target_len=12,
                                 seed=1)
    mask = (enc > 0).astype(np.int64)
    np.testing.assert_allclose(hf_logits(exported, enc, dec, mask), hf_logits(ref, enc, dec, mask),
                               atol=1e-6, rtol=0)
    theirs = exported.state_dict()
    assert set(theirs) == set(ref.state_dict())
    for name, tensor in ref.state_dict().items():
        assert torch.equal(tensor, theirs[name]), name


def test_sharded_safetensors_load(pair, tmp_path):
    _, ref, model, _ = pair
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    enc, dec, _ = padded_batch(model.config.vocab_size, batch=2, input_len=10, target_len=8)
    np.testing.assert_array_equal(np.asarray(hf.load(str(tmp_path))(enc, dec)),
                                  np.asarray(model(enc, dec)))
