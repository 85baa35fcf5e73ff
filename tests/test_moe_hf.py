"""t5pod Switch MoE against HF SwitchTransformersForConditionalGeneration (golden reference)."""

import dataclasses

import numpy as np
import pytest
import torch
from transformers import SwitchTransformersForConditionalGeneration
from transformers.models.switch_transformers import modeling_switch_transformers as hf_switch

from model_zoo.interop import hf
from model_zoo.model_def import split_params
from model_zoo.losses import cross_entropy_loss
from tests.batches import padded_batch
from tests.hf_reference import SWITCH, make_hf_switch

TOL = 2e-4


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    ref = make_hf_switch()
    path = tmp_path_factory.mktemp("switch")
    ref.save_pretrained(path)
    model = hf.load(str(path))
    enc, dec, tgt = padded_batch(SWITCH["vocab_size"], batch=3, input_len=12, target_len=10)
    mask = (enc > 0).astype(np.int64)
    labels = np.where(tgt > 0, tgt, -100).astype(np.int64)
    with torch.no_grad():
        out = ref(input_ids=torch.tensor(enc), attention_mask=torch.tensor(mask),
                  decoder_input_ids=torch.tensor(dec), labels=torch.tensor(labels),
                  output_router_logits=True)
    logits, aux = model(enc, dec, return_aux=True)
    return ref, model, (enc, dec, tgt), out, np.asarray(logits), aux


def test_config_is_read(pair):
    _, model, *_ = pair
    moe = model.config.moe
    assert (moe.num_experts, moe.expert_capacity, moe.num_selected_experts) == (4, 3, 1)
    assert (moe.encoder_sparse_step, moe.decoder_sparse_step) == (2, 2)
    assert model.encoder.layers.moe_layer_indices == [1, 3]  # HF: i % step == 1


def test_logits_router_logits_and_losses_match_hf(pair):
    ref, model, (enc, dec, tgt), out, logits, aux = pair
    valid = tgt > 0
    np.testing.assert_allclose(logits[valid], out.logits.numpy()[valid], atol=TOL, rtol=0)
    for side in ("encoder", "decoder"):
        theirs = [t.numpy() for t in getattr(out, f"{side}_router_logits")]
        ours = np.asarray(aux[f"{side}_router_logits"])
        assert ours.shape[0] == len(theirs)
        for layer, want in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(layer, want, atol=TOL, rtol=0)
        # z-loss: the same mean over tokens of every MoE layer
        assert abs(float(aux[f"{side}_router_z_loss"])
                   - float(getattr(out, f"{side}_z_loss"))) < TOL
        # balancing: HF's own function applied per MoE layer, averaged over the layers (HF
        # pools all layers' tokens first; equal when a stack has one MoE layer)
        per_layer = [float(hf_switch.load_balancing_loss_func(
            torch.softmax(t, -1), t.argmax(-1))) for t in getattr(out, f"{side}_router_logits")]
        assert abs(float(aux[f"{side}_load_balancing_loss"]) - np.mean(per_layer)) < TOL
        if len(per_layer) == 1:
            assert abs(per_layer[0] - float(getattr(out, f"{side}_aux_loss"))) < TOL
    assert float(aux["encoder_dropped_fraction"]) > 0  # capacity 3 is tight: drops compared
    sums = cross_entropy_loss(logits, tgt, valid, z_loss=0.0)
    ours = float(sums.loss / sums.weight) + float(aux["loss"])
    pooled = sum(float(getattr(out, f"{s}_aux_loss")) for s in ("encoder", "decoder"))
    ours_pooled = float(aux["load_balancing_loss"])
    want = float(out.loss) + 0.001 * (ours_pooled - pooled)  # aux coefficient 0.001 in HF
    assert abs(ours - want) < TOL


def test_capacity_factor_gives_hf_capacity(pair):
    _, model, (enc, dec, _), _, logits, _ = pair
    moe = dataclasses.replace(model.config.moe, expert_capacity=None, eval_capacity_factor=1.0,
                              min_expert_capacity=1)  # ceil(1.0 * 12 / 4) = ceil(10 / 4) = 3
    mdef, params = split_params(model)
    other = hf.model_from_params(model.config.replace(moe=moe), params)
    np.testing.assert_allclose(np.asarray(other(enc, dec)), logits, atol=1e-6, rtol=0)
    del mdef


def test_export_round_trip(pair, tmp_path):
    ref, model, (enc, dec, _), out, _, _ = pair
    hf.save(model, str(tmp_path))
    exported = SwitchTransformersForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
    theirs = exported.state_dict()
    assert set(theirs) == set(ref.state_dict())
    for name, tensor in ref.state_dict().items():
        assert torch.equal(tensor, theirs[name]), name
    assert hf.read_config(str(tmp_path)) == model.config
