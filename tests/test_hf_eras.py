"""HF directories of both transformers eras load to what the installed transformers builds.

Hub-era config.json files are written by hand (no `scale_decoder_outputs`, no Switch
`*_sparse_step`); "resaved" directories are the same models after transformers 5's
`save_pretrained`, which writes `tie_word_embeddings: true` and the new keys. The golden
reference is `from_pretrained` of the very directory t5pod reads.
"""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import (SwitchTransformersConfig, SwitchTransformersForConditionalGeneration,
                          T5ForConditionalGeneration)

from model_zoo.interop import hf
from tests.batches import padded_batch
from tests.hf_reference import (CONFIGS, SWITCH, hf_logits, make_hf_switch, make_hf_t5,
                                t5pod_logits)

TOL = 2e-4
T5 = ["T5ForConditionalGeneration"]
ST = ["SwitchTransformersForConditionalGeneration"]


def _hub_dir(path, model, config: dict):
    """`model`'s weights beside a hand-written hub-era config.json."""
    path.mkdir()
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config))
    return path


def _t5_1_1(path):  # gated-gelu, own lm_head, no output scaling
    return _hub_dir(path, make_hf_t5("gated_untied"), dict(
        CONFIGS["gated_untied"], architectures=T5, model_type="t5", dropout_rate=0.0))


def _t5_1_0(path):  # relu, head tied to shared, output scaled
    return _hub_dir(path, make_hf_t5("relu_tied"), dict(
        CONFIGS["relu_tied"], architectures=T5, model_type="t5", dropout_rate=0.0))


def _switch(path):
    """Hub-era Switch (layout from num_sparse_*) whose lm_head differs from shared while
    tie_word_embeddings is true: transformers keeps the head and scales the output."""
    model = make_hf_switch()
    with torch.no_grad():
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight))
    return _hub_dir(path, model, dict(SWITCH, architectures=ST, model_type="switch_transformers",
                                      dropout_rate=0.0))


def _switch_steps(path):
    """Saved by transformers 5 with sparse steps that num_sparse_* would not give: every
    encoder layer sparse (num_sparse_encoder_layers says 2 of 4)."""
    cfg = SwitchTransformersConfig(**SWITCH, dropout_rate=0.0)
    cfg.encoder_sparse_step = 1
    torch.manual_seed(1)
    SwitchTransformersForConditionalGeneration(cfg).save_pretrained(path)
    saved = json.loads((path / "config.json").read_text())
    assert (saved["encoder_sparse_step"], saved["num_sparse_encoder_layers"]) == (1, 2)
    return path


BUILDERS = {"t5_1_1": _t5_1_1, "t5_1_0": _t5_1_0, "switch": _switch,
            "switch_steps": _switch_steps}


def _transformers(path):
    cls = (SwitchTransformersForConditionalGeneration if "switch" in
           json.loads((path / "config.json").read_text())["model_type"]
           else T5ForConditionalGeneration)
    return cls.from_pretrained(str(path)).eval()


def _batch(vocab):
    enc, dec, tgt = padded_batch(vocab, batch=2, input_len=12, target_len=9)
    return enc, dec, (enc > 0).astype(np.int64), tgt > 0


@pytest.fixture(scope="module", params=["t5_1_1-hub", "t5_1_1-resaved", "t5_1_0-hub",
                                        "t5_1_0-resaved", "switch-hub", "switch-resaved",
                                        "switch_steps-resaved"])
def loaded(request, tmp_path_factory):
    """(directory, t5pod model loaded from it, its logits, transformers' logits)."""
    name, era = request.param.split("-")
    root = tmp_path_factory.mktemp(name)
    path = BUILDERS[name](root / "hub")
    if era == "resaved" and name != "switch_steps":
        _transformers(path).save_pretrained(root / "resaved")
        path = root / "resaved"
        saved = json.loads((path / "config.json").read_text())
        assert saved["tie_word_embeddings"] is True  # what transformers 5 writes
        assert ("scale_decoder_outputs" in saved) or ("encoder_sparse_step" in saved)
    model = hf.load(str(path))
    enc, dec, mask, _ = _batch(model.config.vocab_size)
    return path, model, t5pod_logits(model, enc, dec), hf_logits(_transformers(path), enc, dec,
                                                                  mask)


def test_loads_to_transformers_logits(loaded):
    _, model, ours, want = loaded
    valid = _batch(model.config.vocab_size)[-1]
    np.testing.assert_allclose(ours[valid], want[valid], atol=TOL, rtol=0)


def test_hub_era_reference_is_the_model_it_was_made_from(tmp_path):
    """The reference is not vacuous: transformers reads the hand-written T5 1.1 config as an
    unscaled, untied model (the one make_hf_t5 built)."""
    ref = make_hf_t5("gated_untied")
    enc, dec, mask, valid = _batch(96)
    np.testing.assert_allclose(hf_logits(_transformers(_t5_1_1(tmp_path / "d")), enc, dec, mask),
                               hf_logits(ref, enc, dec, mask), atol=1e-6)


def test_save_reads_the_same_in_both_eras(loaded, tmp_path):
    """hf.save output: transformers 5 builds t5pod's logits, and so does a hub-era reading of
    the config (new keys dropped: scaling and tying from tie_word_embeddings, the Switch
    layout from num_sparse_*)."""
    _, model, ours, _ = loaded
    enc, dec, mask, valid = _batch(model.config.vocab_size)
    hf.save(model, str(tmp_path / "new"))
    saved = json.loads((tmp_path / "new" / "config.json").read_text())
    tensors = load_file(str(tmp_path / "new" / "model.safetensors"))
    if saved["tie_word_embeddings"]:  # a hub-era reader ties the head to shared
        np.testing.assert_array_equal(tensors["lm_head.weight"], tensors["shared.weight"])
    old = {k: v for k, v in saved.items()
           if k not in ("scale_decoder_outputs", "encoder_sparse_step", "decoder_sparse_step")}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps(old))
    save_file(tensors, str(tmp_path / "old" / "model.safetensors"), metadata={"format": "pt"})
    for era in ("new", "old"):
        theirs = hf_logits(_transformers(tmp_path / era), enc, dec, mask)
        np.testing.assert_allclose(theirs[valid], ours[valid], atol=TOL, rtol=0, err_msg=era)
