"""ModelConfig validation, presets at published sizes, and clear errors on bad input."""

import json

import jax

import numpy as np
import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from flax import nnx

from model_zoo import PRESETS, EncoderDecoder, ModelConfig, preset
from model_zoo.interop import hf
from model_zoo.model_def import model_def


@pytest.mark.parametrize("field,value,expected", [
    ("d_model", 0, "expected an integer >= 1"),
    ("num_heads", 2.5, "expected an integer >= 1, got float"),
    ("mlp_activations", ("swish",), "relu"),
    ("dropout_rate", 1.0, "[0, 1)"),
    ("dtype", "float64", "bfloat16"),
    ("param_dtype", "bfloat16", "float32"),
    ("remat_policy", "sometimes", "dots"),
    ("relative_attention_max_distance", 4, "num_buckets // 4"),
])
def test_invalid_config_names_field_and_valid_values(field, value, expected):
    with pytest.raises(ValueError) as err:
        preset("t5_1_1_small", **{field: value})
    assert f"ModelConfig.{field}={value!r}" in str(err.value) and expected in str(err.value)


def test_unknown_preset_and_field():
    with pytest.raises(ValueError, match=r"preset='t5_1_1_huge' is invalid: expected one of \(.*"
                       r"\(the model presets\); did you mean"):
        preset("t5_1_1_huge")
    with pytest.raises(ValueError, match="no field"):
        preset("t5_1_1_small", n_layers=3)


def _hf_param_count(cfg: ModelConfig) -> int:
    if cfg.moe is not None:
        from transformers import (SwitchTransformersConfig,
                                  SwitchTransformersForConditionalGeneration)

        hf_cfg = SwitchTransformersConfig(**{k: v for k, v in hf.config_to_hf(cfg).items()
                                             if k not in ("architectures", "t5pod_moe")})
        with torch.device("meta"):
            model = SwitchTransformersForConditionalGeneration(hf_cfg)
        return sum(p.numel() for n, p in model.named_parameters()
                   if not n.endswith("embed_tokens.weight"))
    hf_cfg = T5Config(**{k: v for k, v in hf.config_to_hf(cfg).items() if k != "architectures"})
    hf_cfg.tie_word_embeddings = cfg.tie_word_embeddings
    with torch.device("meta"):
        model = T5ForConditionalGeneration(hf_cfg)
    return sum(p.numel() for n, p in model.named_parameters()
               if not n.endswith("embed_tokens.weight"))


# ST-MoE presets (gated experts, top-2) have no HF equivalent; HF builds 128-expert models
# slowly (switch_base_8 checks the same layout); hybrids have no HF counterpart.
@pytest.mark.parametrize("name", sorted(n for n in PRESETS if not n.endswith("_tiny")
                                        and not n.startswith("st_moe") and "_128" not in n
                                        and PRESETS[n].byte_encoder is None))
def test_presets_have_the_parameter_count_of_hf(name):
    cfg = PRESETS[name]
    abstract = model_def(lambda r: EncoderDecoder(cfg, rngs=r)).abstract_params()
    ours = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
    assert ours == _hf_param_count(cfg)


def test_published_sizes():
    counts = {n: PRESETS[n] for n in ("t5_1_0_small", "t5_1_0_base", "t5_1_1_xxl")}
    assert counts["t5_1_0_small"].d_model == 512 and counts["t5_1_0_base"].num_heads == 12
    assert (counts["t5_1_1_xxl"].d_model, counts["t5_1_1_xxl"].d_ff) == (4096, 10240)


@pytest.mark.parametrize("name,millions", [("byt5_small", 300), ("byt5_base", 582),
                                           ("byt5_large", 1230), ("byt5_xl", 3740),
                                           ("byt5_xxl", 12880)])
def test_byt5_presets_have_the_published_sizes(name, millions):
    """ByT5 (Xue et al. 2022, Table 1): vocab 384, encoder 3x the decoder's depth."""
    cfg = PRESETS[name]
    assert cfg.vocab_size == 384 and cfg.num_encoder_layers == 3 * cfg.num_decoder_layers
    abstract = model_def(lambda r: EncoderDecoder(cfg, rngs=r)).abstract_params()
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract))
    assert abs(count / 1e6 - millions) / millions < 0.02, count


def _write_hf_dir(path, **config):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    return str(path)


def test_unsupported_architecture_is_refused(tmp_path):
    path = _write_hf_dir(tmp_path / "bert", architectures=["BertForMaskedLM"], model_type="bert")
    with pytest.raises(ValueError, match="BertForMaskedLM.*not supported.*T5ForConditionalGen"):
        hf.load(path)


def test_missing_safetensors_is_refused(tmp_path):
    cfg = hf.config_to_hf(preset("t5_1_1_tiny"))
    path = _write_hf_dir(tmp_path / "bin", **cfg)
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin.*safetensors only"):
        hf.load(path)


def test_vocab_mismatch_is_refused(tmp_path):
    cfg = preset("t5_1_1_tiny", vocab_size=64)
    hf.save(EncoderDecoder(cfg, rngs=nnx.Rngs(0)), str(tmp_path))
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["vocab_size"] = 80
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"shared.weight has shape \(64, 64\).*vocab_size=80"):
        hf.load(str(tmp_path))


def test_param_shape_mismatch_names_the_param():
    cfg = preset("t5_1_1_tiny", vocab_size=64)
    pure = model_def(lambda r: EncoderDecoder(cfg, rngs=r)).abstract_params()
    pure = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), pure)
    pure["encoder"]["final_norm"]["scale"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"\['encoder'\]\['final_norm'\]\['scale'\].*\(3,\)"):
        hf.model_from_params(cfg, pure)


def test_bad_features_fail_before_compiling():
    model = EncoderDecoder(preset("t5_1_1_tiny", vocab_size=64), rngs=nnx.Rngs(0))
    enc = np.ones((2, 5), np.int32)
    with pytest.raises(ValueError, match="decoder_input_tokens must be integer"):
        model(enc, np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="decoder_input_tokens has batch 3"):
        model(enc, np.ones((3, 3), np.int32))
    with pytest.raises(ValueError, match="encoder_segment_ids has shape"):
        model(enc, np.ones((2, 3), np.int32), encoder_segment_ids=np.ones((2, 4), np.int32))
