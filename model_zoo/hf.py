"""HF transformers interop without torch: read and write T5 directories (config.json + safetensors).

`load(dir)` builds an `EncoderDecoder` from an HF `T5ForConditionalGeneration` directory
(single or sharded safetensors); `save(model, dir)` writes one that
`transformers.T5ForConditionalGeneration.from_pretrained` loads. Real T5 checkpoints hold
`shared`, `encoder.embed_tokens`, `decoder.embed_tokens` (equal to `shared`) and, when
untied, `lm_head`; t5pod keeps one input embedding and refuses checkpoints that differ.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from model_zoo.config import ModelConfig
from model_zoo.functional import model_def
from model_zoo.t5 import EncoderDecoder

ARCHITECTURES = ("T5ForConditionalGeneration",)
MODEL_TYPES = ("t5",)
_ACTIVATIONS = {"relu": "relu", "gated-gelu": "gated-gelu"}

# (t5pod path in the stacked layer, HF path in block i, kind); kinds say how to reshape.
_ENCODER_LAYER = [
    ("pre_attention_norm.scale", "layer.0.layer_norm.weight", "vector"),
    ("attention.query", "layer.0.SelfAttention.q.weight", "in_proj"),
    ("attention.key", "layer.0.SelfAttention.k.weight", "in_proj"),
    ("attention.value", "layer.0.SelfAttention.v.weight", "in_proj"),
    ("attention.out", "layer.0.SelfAttention.o.weight", "out_proj"),
    ("pre_mlp_norm.scale", "layer.1.layer_norm.weight", "vector"),
]
_DECODER_LAYER = [
    ("pre_self_attention_norm.scale", "layer.0.layer_norm.weight", "vector"),
    ("self_attention.query", "layer.0.SelfAttention.q.weight", "in_proj"),
    ("self_attention.key", "layer.0.SelfAttention.k.weight", "in_proj"),
    ("self_attention.value", "layer.0.SelfAttention.v.weight", "in_proj"),
    ("self_attention.out", "layer.0.SelfAttention.o.weight", "out_proj"),
    ("pre_cross_attention_norm.scale", "layer.1.layer_norm.weight", "vector"),
    ("cross_attention.query", "layer.1.EncDecAttention.q.weight", "in_proj"),
    ("cross_attention.key", "layer.1.EncDecAttention.k.weight", "in_proj"),
    ("cross_attention.value", "layer.1.EncDecAttention.v.weight", "in_proj"),
    ("cross_attention.out", "layer.1.EncDecAttention.o.weight", "out_proj"),
    ("pre_mlp_norm.scale", "layer.2.layer_norm.weight", "vector"),
]


def _mlp_entries(hf_layer: int, gated: bool):
    prefix = f"layer.{hf_layer}.DenseReluDense"
    wis = ["wi_0", "wi_1"] if gated else ["wi"]
    return ([(f"mlp.{w}", f"{prefix}.{w}.weight", "dense") for w in wis]
            + [("mlp.wo", f"{prefix}.wo.weight", "dense")])


# Config ------------------------------------------------------------------------------

def config_from_hf(hf: dict, source: str = "config.json", **overrides) -> ModelConfig:
    """A ModelConfig from an HF T5 config dict; refuses other architectures."""
    archs = hf.get("architectures") or []
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES or (archs and not set(archs) & set(ARCHITECTURES)):
        raise ValueError(f"{source}: architecture {archs or '?'} (model_type {model_type!r}) is "
                         f"not supported; hf.load reads {ARCHITECTURES} with model_type "
                         f"in {MODEL_TYPES}")
    proj = hf.get("feed_forward_proj", "relu")
    if proj not in _ACTIVATIONS:
        raise ValueError(f"{source}: feed_forward_proj={proj!r} is not supported; expected one "
                         f"of {tuple(_ACTIVATIONS)}")
    fields = dict(
        vocab_size=hf["vocab_size"], d_model=hf["d_model"], d_ff=hf["d_ff"],
        num_heads=hf["num_heads"], d_kv=hf["d_kv"], num_encoder_layers=hf["num_layers"],
        num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
        feed_forward_proj=_ACTIVATIONS[proj],
        relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)),
        dropout_rate=float(hf.get("dropout_rate", 0.1)),
        layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)),
    )
    fields.update(overrides)
    return ModelConfig(**fields)


def config_to_hf(cfg: ModelConfig) -> dict:
    if cfg.byte_encoder is not None:
        raise ValueError("HF transformers has no T5 with a byte encoder beside the token one; "
                         "keep this hybrid model as a t5pod checkpoint (its parts load from "
                         "HF T5 and ByT5 directories)")
    return {
        "architectures": list(ARCHITECTURES), "model_type": "t5",
        "vocab_size": cfg.vocab_size, "d_model": cfg.d_model, "d_ff": cfg.d_ff,
        "num_heads": cfg.num_heads, "d_kv": cfg.d_kv, "num_layers": cfg.num_encoder_layers,
        "num_decoder_layers": cfg.num_decoder_layers, "feed_forward_proj": cfg.feed_forward_proj,
        "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
        "relative_attention_max_distance": cfg.relative_attention_max_distance,
        "tie_word_embeddings": cfg.tie_word_embeddings, "dropout_rate": cfg.dropout_rate,
        "layer_norm_epsilon": cfg.layer_norm_epsilon, "is_encoder_decoder": True,
        "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
    }


# Tensors ------------------------------------------------------------------------------

def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """All tensors of an HF directory as float32 numpy, single file or sharded with an index."""
    index = os.path.join(path, "model.safetensors.index.json")
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    elif os.path.exists(single):
        files = ["model.safetensors"]
    else:
        present = sorted(os.listdir(path))
        raise FileNotFoundError(
            f"{path} has no model.safetensors or model.safetensors.index.json (found {present}); "
            "t5pod reads safetensors only, never pickled .bin files: re-save with "
            "save_pretrained(dir, safe_serialization=True)")
    tensors = {}
    for name in files:
        with safe_open(os.path.join(path, name), framework="flax") as f:
            for key in f.keys():
                tensors[key] = np.asarray(f.get_tensor(key), dtype=np.float32)
    return tensors


def _to_t5pod(kind: str, w: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    h, k = cfg.num_heads, cfg.d_kv
    if kind == "in_proj":   # torch Linear [h*k, d] -> [d, h, k]
        return w.T.reshape(cfg.d_model, h, k)
    if kind == "out_proj":  # [d, h*k] -> [h, k, d]
        return w.T.reshape(h, k, cfg.d_model)
    if kind == "dense":
        return w.T
    return w


def _to_hf(kind: str, w: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    inner = cfg.num_heads * cfg.d_kv
    if kind == "in_proj":
        return w.reshape(cfg.d_model, inner).T
    if kind == "out_proj":
        return w.reshape(inner, cfg.d_model).T
    if kind == "dense":
        return w.T
    return w


def _layer_table(cfg: ModelConfig, side: str):
    if side == "encoder":
        return _ENCODER_LAYER + _mlp_entries(1, cfg.gated), cfg.num_encoder_layers
    return _DECODER_LAYER + _mlp_entries(2, cfg.gated), cfg.num_decoder_layers


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def _get(tree: dict, dotted: str):
    for p in dotted.split("."):
        tree = tree[p]
    return tree


def params_from_hf(tensors: dict[str, np.ndarray], cfg: ModelConfig) -> dict:
    """A pure param dict shaped like `nnx.to_pure_dict(nnx.state(EncoderDecoder(cfg)))`."""
    def take(name):
        if name not in tensors:
            raise KeyError(f"HF checkpoint lacks tensor {name!r} that config "
                           f"(feed_forward_proj={cfg.feed_forward_proj}, "
                           f"tie_word_embeddings={cfg.tie_word_embeddings}) requires")
        return tensors[name]

    shared = take("shared.weight")
    for side in ("encoder", "decoder"):
        other = tensors.get(f"{side}.embed_tokens.weight")
        if other is not None and not np.array_equal(other, shared):
            raise ValueError(f"{side}.embed_tokens.weight differs from shared.weight; t5pod "
                             "models share one input embedding, as real T5 checkpoints do")
    pure: dict = {"shared": shared}
    if not cfg.tie_word_embeddings:
        pure["lm_head"] = take("lm_head.weight").T
    for side in ("encoder", "decoder"):
        table, n = _layer_table(cfg, side)
        for ours, theirs, kind in table:
            stacked = np.stack([_to_t5pod(kind, take(f"{side}.block.{i}.{theirs}"), cfg)
                                for i in range(n)])
            _set(pure, f"{side}.layers.layer.{ours}", stacked)
        relpos = take(f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
        _set(pure, f"{side}.relative_position_bias.embedding", relpos.T)
        _set(pure, f"{side}.final_norm.scale", take(f"{side}.final_layer_norm.weight"))
    return pure


def params_to_hf(pure: dict, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """HF tensor names -> float32 arrays for a pure t5pod param dict."""
    shared = np.asarray(pure["shared"], np.float32)
    out = {"shared.weight": shared, "encoder.embed_tokens.weight": shared,
           "decoder.embed_tokens.weight": shared}
    out["lm_head.weight"] = (shared if cfg.tie_word_embeddings
                             else np.asarray(pure["lm_head"], np.float32).T)
    for side in ("encoder", "decoder"):
        table, n = _layer_table(cfg, side)
        for ours, theirs, kind in table:
            stacked = np.asarray(_get(pure, f"{side}.layers.layer.{ours}"), np.float32)
            for i in range(n):
                out[f"{side}.block.{i}.{theirs}"] = _to_hf(kind, stacked[i], cfg)
        relpos = np.asarray(_get(pure, f"{side}.relative_position_bias.embedding"), np.float32)
        out[f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = relpos.T
        out[f"{side}.final_layer_norm.weight"] = np.asarray(
            _get(pure, f"{side}.final_norm.scale"), np.float32)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


# Models -------------------------------------------------------------------------------

def model_from_params(cfg: ModelConfig, pure: dict) -> EncoderDecoder:
    """Fill an abstract model with `pure` params, checking every shape first."""
    mdef = model_def(lambda r: EncoderDecoder(cfg, rngs=r))
    expected = mdef.abstract_params()
    flat_expected = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
    flat_given = dict(jax.tree_util.tree_flatten_with_path(pure)[0])
    missing = set(flat_expected) - set(flat_given)
    extra = set(flat_given) - set(flat_expected)
    if missing or extra:
        name = lambda p: jax.tree_util.keystr(p)  # noqa: E731
        raise ValueError(f"params do not match the model: missing {sorted(map(name, missing))}, "
                         f"unexpected {sorted(map(name, extra))}")
    for path, spec in flat_expected.items():
        got = np.shape(flat_given[path])
        if got != spec.shape:
            raise ValueError(f"param {jax.tree_util.keystr(path)} has shape {got}, expected "
                             f"{spec.shape} for config (vocab_size={cfg.vocab_size}, "
                             f"d_model={cfg.d_model}, d_ff={cfg.d_ff}, num_heads={cfg.num_heads},"
                             f" d_kv={cfg.d_kv})")
    return mdef.bind(jax.tree.map(lambda x: jax.numpy.asarray(x, np.float32), pure))


def read_config(path: str, **overrides) -> ModelConfig:
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{path} is not an HF model directory: no config.json")
    with open(cfg_path) as f:
        return config_from_hf(json.load(f), cfg_path, **overrides)


def load(path: str, **overrides) -> EncoderDecoder:
    """An EncoderDecoder with the weights of the HF T5 directory `path`.

    `overrides` replace ModelConfig fields that HF does not store (dtype, remat_policy, ...).
    """
    cfg = read_config(path, **overrides)
    tensors = read_safetensors(path)
    vocab = tensors.get("shared.weight", np.zeros((0, 0))).shape
    if vocab != (cfg.vocab_size, cfg.d_model):
        raise ValueError(f"{path}: shared.weight has shape {vocab}, expected "
                         f"(vocab_size={cfg.vocab_size}, d_model={cfg.d_model}) from config.json")
    return model_from_params(cfg, params_from_hf(tensors, cfg))


def save(model: EncoderDecoder, path: str) -> None:
    """Write `model` as an HF T5ForConditionalGeneration directory (config.json + safetensors)."""
    cfg = model.config
    os.makedirs(path, exist_ok=True)
    pure = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    save_file(params_to_hf(pure, cfg), os.path.join(path, "model.safetensors"),
              metadata={"format": "pt"})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config_to_hf(cfg), f, indent=2)
