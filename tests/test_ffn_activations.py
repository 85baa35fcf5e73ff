"""MLP activations by name (`ModelConfig.mlp_activations`): a gated-SiLU T5 trains, matches
HF transformers' `feed_forward_proj="gated-silu"` both ways, and bad names are refused."""

import json

import numpy as np
import pytest
from flax import nnx
from transformers import T5ForConditionalGeneration

from model_zoo import EncoderDecoder, ModelConfig, flops, preset
from model_zoo.interop import hf
from tests.batches import padded_batch
from tests.hf_reference import hf_logits, make_hf_t5, t5pod_logits
from tests.train_helpers import copy_batch, make_trainer

TOL = 2e-4
SILU = preset("t5_1_1_silu_tiny", vocab_size=64, d_model=32, d_ff=64, num_heads=4, d_kv=8,
              num_encoder_layers=1, num_decoder_layers=1)


def test_gated_silu_preset_trains():
    trainer = make_trainer(model_cfg=SILU, lr=1e-2)
    state = trainer.init_state()
    mlp = state.params["encoder"]["layers"]["layer"]["mlp"]
    assert sorted(mlp) == ["wi_0", "wi_1", "wo"]  # one input projection per activation
    losses = []
    for _ in range(6):
        state, metrics = trainer.train_step(state, copy_batch(8))
        losses.append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses


def _logits_close(ours, theirs, tgt):
    valid = tgt > 0
    np.testing.assert_allclose(ours[valid], theirs[valid], atol=TOL, rtol=0)


def test_gated_silu_imports_from_hf(tmp_path):
    ref = make_hf_t5("gated_silu", seed=4)
    ref.save_pretrained(tmp_path)
    model = hf.load(str(tmp_path))
    assert model.config.mlp_activations == ("silu", "linear")
    enc, dec, tgt = padded_batch(96, batch=2, input_len=14, target_len=10)
    _logits_close(t5pod_logits(model, enc, dec),
                  hf_logits(ref, enc, dec, (enc > 0).astype(np.int64)), tgt)


def test_gated_silu_exports_to_hf(tmp_path):
    cfg = SILU.replace(vocab_size=96)
    model = EncoderDecoder(cfg, rngs=nnx.Rngs(7))
    hf.save(model, str(tmp_path))
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["feed_forward_proj"] == "gated-silu"
    exported = T5ForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
    assert exported.config.is_gated_act and exported.config.dense_act_fn == "silu"
    enc, dec, tgt = padded_batch(96, batch=2, input_len=14, target_len=10, seed=2)
    _logits_close(t5pod_logits(model, enc, dec),
                  hf_logits(exported, enc, dec, (enc > 0).astype(np.int64)), tgt)


@pytest.mark.parametrize("value,named", [(("gelu", "swiglu"), "swiglu"),
                                         ("gated-gelu", "gated-gelu"), ((), "()")])
def test_unknown_activation_is_refused_by_name(value, named):
    with pytest.raises(ValueError) as err:
        ModelConfig(vocab_size=8, d_model=8, d_ff=8, num_heads=1, d_kv=8, num_encoder_layers=1,
                    num_decoder_layers=1, mlp_activations=value)
    assert "mlp_activations" in str(err.value) and named in str(err.value)
    assert "silu" in str(err.value)  # the valid names are listed


def test_hf_activation_without_a_t5pod_twin_is_refused():
    with pytest.raises(ValueError, match="mlp_activations=\\('silu', 'gelu'\\)"):
        hf.config_to_hf(SILU.replace(mlp_activations=("silu", "gelu")))
    cfg = hf.config_to_hf(SILU)  # HF's "gelu" is the exact erf GELU, t5pod's the tanh one
    with pytest.raises(ValueError, match="feed_forward_proj='gated-swish'"):
        hf.config_from_hf({**cfg, "feed_forward_proj": "gated-swish"})


def test_flops_count_one_matmul_per_projection():
    relu = SILU.replace(mlp_activations=("relu",))
    three = SILU.replace(mlp_activations=("silu", "linear", "linear"))
    mlp = 2 * 10 * SILU.d_model * SILU.d_ff  # one [d, f] matmul over 10 positions
    per_layer = [flops.forward_flops_per_example(c, 10, 10) for c in (relu, SILU, three)]
    assert per_layer[1] - per_layer[0] == per_layer[2] - per_layer[1] == 2 * mlp  # enc + dec
