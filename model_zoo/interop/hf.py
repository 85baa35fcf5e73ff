"""HF transformers interop without torch: read and write T5 directories (config.json + safetensors).

MoE models (`ModelConfig.moe`) read and write `SwitchTransformersForConditionalGeneration`
directories: the same T5 blocks with `mlp` feed-forwards, a router
(`mlp.router.classifier`) and `mlp.experts.expert_{e}` in every sparse block. HF's fixed
`expert_capacity` is kept as `MoEConfig.expert_capacity`; a config with capacity factors
instead writes the capacity of a 512-token group at the eval factor (HF needs a number) and
keeps the full MoEConfig under `t5pod_moe`, which `load` prefers. HF Switch has top-1
tokens-choose routing, non-gated experts and MoE layers in both stacks only.

The MLP: HF's `feed_forward_proj` "X" is activation X on `wi`, "gated-X" is X on `wi_0`
times a linear `wi_1` (read as transformers' T5Config reads it, "gated-gelu" meaning the
tanh GELU "gelu_new"); `_HF_ACTIVATIONS` names the HF activations t5pod has.

`load(dir)` builds an `EncoderDecoder` from an HF `T5ForConditionalGeneration` directory
(single or sharded safetensors); `save(model, dir)` writes one that
`transformers.T5ForConditionalGeneration.from_pretrained` loads. Real T5 checkpoints hold
`shared`, `encoder.embed_tokens`, `decoder.embed_tokens` (equal to `shared`) and, when
untied, `lm_head`; t5pod keeps one input embedding and refuses checkpoints that differ.

Both transformers eras are read as the installed transformers (5.x) builds them. The output
layer: T5 scales the decoder output by d_model^-0.5 when `scale_decoder_outputs` says so
(transformers 5) or, in hub-era configs without that key, unless `tie_word_embeddings` is
false; Switch scales when `tie_word_embeddings` is true. The head is `shared` unless
`lm_head.weight` is present and differs from it (transformers 5 always writes
`tie_word_embeddings: true` for T5). t5pod's tied head is shared and scaled, its untied
head unscaled; the two other combinations load as an untied head with the scale folded in.
Switch layouts come from `encoder_sparse_step`/`decoder_sparse_step` when present, else from
`num_sparse_*_layers`. `save` writes both eras' keys, consistently.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
from flax import nnx
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from fields import old_formats
from model_zoo.config import ModelConfig, MoEConfig
from model_zoo.ffn import projection_names
from model_zoo.interop import param_paths
from model_zoo.model_def import model_def
from model_zoo.moe.sparse_stack import sparse_position
from model_zoo.t5 import EncoderDecoder

SWITCH = "SwitchTransformersForConditionalGeneration"
ARCHITECTURES = ("T5ForConditionalGeneration", SWITCH)
MODEL_TYPES = ("t5", "switch_transformers")
# HF's ACT2FN names: t5pod's (model_zoo/ffn.py). HF's "gelu" is the exact erf GELU, which
# t5pod lacks; t5pod's "gelu" is the tanh approximation, HF's "gelu_new".
_HF_ACTIVATIONS = {"relu": "relu", "silu": "silu", "gelu_new": "gelu"}

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


def _mlp_entries(hf_layer: int, cfg: ModelConfig, switch: bool = False, sparse: bool = False):
    prefix = f"layer.{hf_layer}.{'mlp' if switch else 'DenseReluDense'}"
    wis = list(projection_names(cfg.mlp_activations))
    if sparse:  # kind "experts": one tensor per expert, `{e}` filled in, stacked on `expert`
        return ([("mlp.router", f"{prefix}.router.classifier.weight", "dense")]
                + [(f"mlp.{w}", f"{prefix}.experts.expert_{{e}}.{w}.weight", "experts")
                   for w in wis + ["wo"]])
    return ([(f"mlp.{w}", f"{prefix}.{w}.weight", "dense") for w in wis]
            + [("mlp.wo", f"{prefix}.wo.weight", "dense")])


# Config ------------------------------------------------------------------------------

def scales_output(hf: dict) -> bool:
    """Whether transformers multiplies the decoder output by d_model^-0.5 before the head."""
    if hf.get("model_type") == "switch_transformers":
        return hf.get("tie_word_embeddings", True) is not False
    if "scale_decoder_outputs" in hf:
        return bool(hf["scale_decoder_outputs"])
    return hf.get("tie_word_embeddings", True) is not False  # the hub-era meaning


def has_own_head(hf: dict, tensors: dict) -> bool:
    """Whether transformers builds a head apart from `shared`: `lm_head.weight` present and
    different (transformers 5 ties T5 heads otherwise, whatever the config says)."""
    head, shared = tensors.get("lm_head.weight"), tensors.get("shared.weight")
    if head is None:
        if hf.get("model_type") == "switch_transformers" and hf.get("tie_word_embeddings") is False:
            raise KeyError("HF checkpoint lacks tensor 'lm_head.weight' that its config "
                           "(tie_word_embeddings=false) requires")
        return False
    return shared is None or not np.array_equal(head, shared)


def _check_architecture(hf: dict, source: str) -> None:
    archs = hf.get("architectures") or []
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES or (archs and not set(archs) & set(ARCHITECTURES)):
        raise ValueError(f"{source}: architecture {archs or '?'} (model_type {model_type!r}) is "
                         f"not supported; hf.load reads {ARCHITECTURES} with model_type "
                         f"in {MODEL_TYPES}")


def config_from_hf(hf: dict, source: str = "config.json", *, own_head: bool | None = None,
                   **overrides) -> ModelConfig:
    """A ModelConfig from an HF T5 config dict; refuses other architectures.

    `own_head`: whether the checkpoint has a head apart from `shared` (`has_own_head`); unknown
    (None), a scaled output means a tied head and an unscaled one an own head.
    """
    _check_architecture(hf, source)
    fields = dict(
        vocab_size=hf["vocab_size"], d_model=hf["d_model"], d_ff=hf["d_ff"],
        num_heads=hf["num_heads"], d_kv=hf["d_kv"], num_encoder_layers=hf["num_layers"],
        num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
        mlp_activations=activations_from_hf(hf.get("feed_forward_proj", "relu"), source),
        relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
        tie_word_embeddings=scales_output(hf) and not (
            own_head if own_head is not None else not scales_output(hf)),
        dropout_rate=float(hf.get("dropout_rate", 0.1)),
        layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)),
    )
    if hf.get("model_type") == "switch_transformers":
        fields.update(mlp_activations=_switch_activation(hf, source),
                      moe=_moe_from_hf(hf, source))
    fields.update(overrides)
    return ModelConfig(**fields)


def activations_from_hf(proj: str, source: str = "config.json") -> tuple[str, ...]:
    """`mlp_activations` for HF's T5 `feed_forward_proj` ("relu", "gated-gelu", ...)."""
    parts = proj.split("-") if isinstance(proj, str) else [None]
    gated = len(parts) == 2 and parts[0] == "gated"
    act = "gelu_new" if proj == "gated-gelu" else parts[-1]
    if len(parts) > (2 if gated else 1) or act not in _HF_ACTIVATIONS:
        raise ValueError(f"{source}: feed_forward_proj={proj!r} is not supported; t5pod reads "
                         f"'X' or 'gated-X' with X in {tuple(_HF_ACTIVATIONS)} ('gated-gelu': "
                         "gelu_new)")
    return (_HF_ACTIVATIONS[act], "linear") if gated else (_HF_ACTIVATIONS[act],)


def activations_to_hf(activations: tuple[str, ...]) -> str:
    """HF's T5 `feed_forward_proj` for `mlp_activations`; refuses what HF cannot express."""
    theirs = {ours: name for name, ours in _HF_ACTIVATIONS.items()}
    first = theirs.get(activations[0])
    if first is not None and len(activations) == 1:
        return first
    if first is not None and len(activations) == 2 and activations[1] == "linear":
        return "gated-gelu" if first == "gelu_new" else f"gated-{first}"
    raise ValueError(f"hf.save: mlp_activations={activations!r} has no HF T5 feed_forward_proj; "
                     f"HF has (X,) and (X, 'linear') with X in {tuple(theirs)}")


def _switch_activation(hf: dict, source: str) -> tuple[str, ...]:
    act = hf.get("dense_act_fn", "relu")
    if act not in _HF_ACTIVATIONS:
        raise ValueError(f"{source}: dense_act_fn={act!r} is not supported; t5pod reads "
                         f"SwitchTransformers experts with one of {tuple(_HF_ACTIVATIONS)}")
    return (_HF_ACTIVATIONS[act],)


def _hf_sparse_step(layers: int, sparse_layers: int) -> int:
    """HF's rule: every (layers // sparse_layers)-th layer; with 0 sparse layers HF still
    makes layer 1 sparse when layers > 1 (its documented quirk), which this reproduces."""
    return layers // sparse_layers if sparse_layers > 0 else layers


def _moe_from_hf(hf: dict, source: str) -> MoEConfig:
    if "t5pod_moe" in hf:
        return MoEConfig(**old_formats.moe_fields(hf["t5pod_moe"]))
    if hf.get("router_bias", False):
        raise ValueError(f"{source}: router_bias=True is not supported (t5pod routers have no "
                         "bias, like the released Switch checkpoints)")
    layers = hf["num_layers"]
    dec_layers = hf.get("num_decoder_layers") or layers
    return MoEConfig(
        num_experts=hf.get("num_experts", 8), num_selected_experts=1,
        encoder_sparse_step=hf.get("encoder_sparse_step", _hf_sparse_step(
            layers, hf.get("num_sparse_encoder_layers", 3))),
        decoder_sparse_step=hf.get("decoder_sparse_step", _hf_sparse_step(
            dec_layers, hf.get("num_sparse_decoder_layers", 3))),
        expert_capacity=hf.get("expert_capacity", 64),
        group_size=None, ignore_padding_tokens=False,  # HF: a sequence per group, padding routed
        router_loss_reduction="stacks_sum",  # HF adds the encoder's and decoder's losses
        router_jitter_noise=float(hf.get("router_jitter_noise", 0.01)),
        router_z_loss_weight=float(hf.get("router_z_loss_coef", 0.001)),
        load_balancing_loss_weight=float(hf.get("router_aux_loss_coef", 0.001)))


def _check_rms(cfg: ModelConfig) -> None:
    if cfg.norm != "rms":
        raise ValueError(f"ModelConfig.norm={cfg.norm!r}: HF transformers' T5 has only RMS layer "
                         "norms (norm='rms'); keep a KL-Norm model as a t5pod checkpoint")


def config_to_hf(cfg: ModelConfig) -> dict:
    _check_rms(cfg)
    if cfg.byte_encoder is not None:
        raise ValueError("HF transformers has no T5 with a byte encoder beside the token one; "
                         "keep this hybrid model as a t5pod checkpoint (its parts load from "
                         "HF T5 and ByT5 directories)")
    if cfg.moe is not None:
        return _switch_config_to_hf(cfg)
    return {
        "architectures": list(ARCHITECTURES), "model_type": "t5",
        "vocab_size": cfg.vocab_size, "d_model": cfg.d_model, "d_ff": cfg.d_ff,
        "num_heads": cfg.num_heads, "d_kv": cfg.d_kv, "num_layers": cfg.num_encoder_layers,
        "num_decoder_layers": cfg.num_decoder_layers,
        "feed_forward_proj": activations_to_hf(cfg.mlp_activations),
        "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
        "relative_attention_max_distance": cfg.relative_attention_max_distance,
        # both eras: hub-era readers take the scaling (and tying) from tie_word_embeddings,
        # transformers 5 from scale_decoder_outputs, and unties a differing lm_head.weight
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "scale_decoder_outputs": cfg.tie_word_embeddings, "dropout_rate": cfg.dropout_rate,
        "layer_norm_epsilon": cfg.layer_norm_epsilon, "is_encoder_decoder": True,
        "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
    }


def _switch_config_to_hf(cfg: ModelConfig) -> dict:
    moe = cfg.moe
    if len(cfg.mlp_activations) != 1:
        raise ValueError(f"hf.save: mlp_activations={cfg.mlp_activations!r} has no "
                         "SwitchTransformers equivalent (HF's experts have one projection, wi)")
    problems = {"moe.num_selected_experts": (moe.num_selected_experts, 1),
                "moe.encoder_routing": (moe.encoder_routing, "tokens_choose"),
                "moe.encoder_batch_prioritized_routing": (moe.encoder_batch_prioritized_routing,
                                                         False)}
    for name, (value, want) in problems.items():
        if value != want:
            raise ValueError(f"hf.save: {name}={value!r} has no SwitchTransformers equivalent "
                             f"(HF supports {want!r} only)")
    for side in ("encoder", "decoder"):
        if moe.sparse_step(side) == 0:
            raise ValueError(f"hf.save: moe.{side}_sparse_step=0 (no MoE layers) has no "
                             "SwitchTransformers equivalent; use a dense T5 for that stack")
    dense = config_to_hf(cfg.replace(moe=None))
    del dense["scale_decoder_outputs"]  # Switch scales iff tie_word_embeddings, in both eras
    cap = moe.expert_capacity or max(moe.min_expert_capacity,
                                     -(-int(moe.eval_capacity_factor * 512) // moe.num_experts))
    return {**dense, "architectures": [SWITCH], "model_type": "switch_transformers",
            "num_experts": moe.num_experts, "expert_capacity": cap,
            "num_sparse_encoder_layers": cfg.num_encoder_layers // moe.encoder_sparse_step,
            "num_sparse_decoder_layers": cfg.num_decoder_layers // moe.decoder_sparse_step,
            "encoder_sparse_step": moe.encoder_sparse_step,
            "decoder_sparse_step": moe.decoder_sparse_step,
            "router_bias": False, "router_dtype": "float32",
            "router_jitter_noise": moe.router_jitter_noise,
            "router_z_loss_coef": moe.router_z_loss_weight,
            "router_aux_loss_coef": moe.load_balancing_loss_weight,
            "dense_act_fn": activations_to_hf(cfg.mlp_activations),
            "t5pod_moe": dataclasses.asdict(moe)}


# Tensors ------------------------------------------------------------------------------

def _safetensors_files(path: str) -> list[str]:
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            return sorted(set(json.load(f)["weight_map"].values()))
    if os.path.exists(os.path.join(path, "model.safetensors")):
        return ["model.safetensors"]
    present = sorted(os.listdir(path))
    raise FileNotFoundError(
        f"{path} has no model.safetensors or model.safetensors.index.json (found {present}); "
        "t5pod reads safetensors only, never pickled .bin files: re-save with "
        "save_pretrained(dir, safe_serialization=True)")


def read_safetensors(path: str, names=None) -> dict[str, np.ndarray]:
    """Tensors of an HF directory (all, or those of `names` present) as float32 numpy,
    single file or sharded with an index."""
    tensors = {}
    for name in _safetensors_files(path):
        file = os.path.join(path, name)
        try:
            with safe_open(file, framework="flax") as f:
                for key in f.keys():
                    if names is None or key in names:
                        tensors[key] = np.asarray(f.get_tensor(key), dtype=np.float32)
        except SafetensorError as e:
            raise ValueError(f"{file} is damaged: not a complete safetensors file (safetensors: "
                             f"{e}); download or save it again") from None
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


def _layer_slots(cfg: ModelConfig, side: str):
    """[(t5pod prefix of a stacked layer, HF block indices it stacks, its entries)]."""
    n = cfg.num_encoder_layers if side == "encoder" else cfg.num_decoder_layers
    attention, ff = (_ENCODER_LAYER, 1) if side == "encoder" else (_DECODER_LAYER, 2)
    switch = cfg.moe is not None
    step = cfg.moe.sparse_step(side) if switch else 0
    if not step:
        return [(f"{side}.layers.layer", list(range(n)),
                 attention + _mlp_entries(ff, cfg, switch))]
    return [(f"{side}.layers.blocks.layer.layer_{j}", list(range(j, n, step)),
             attention + _mlp_entries(ff, cfg, True, j == sparse_position(step)))
            for j in range(step)]


def params_from_hf(tensors: dict[str, np.ndarray], cfg: ModelConfig,
                   scaled: bool | None = None) -> dict:
    """A pure param dict shaped like `nnx.to_pure_dict(nnx.state(EncoderDecoder(cfg)))`.

    `scaled`: whether the HF model scales the decoder output (`scales_output`); an untied
    t5pod head then takes the scale into its kernel. None: as `cfg` says (tied: scaled).
    """
    _check_rms(cfg)

    def take(name):
        if name not in tensors:
            raise KeyError(f"HF checkpoint lacks tensor {name!r} that config "
                           f"(mlp_activations={cfg.mlp_activations}, "
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
        head = tensors.get("lm_head.weight") if scaled is not None else take("lm_head.weight")
        head = shared if head is None else head
        pure["lm_head"] = head.T * (cfg.d_model ** -0.5 if scaled else 1.0)
    elif scaled is False:
        raise ValueError("config.json says the decoder output is not scaled, which a tied "
                         "t5pod head (tie_word_embeddings=True) cannot express; load it untied")
    def read(kind, name):
        if kind == "experts":
            return np.stack([take(name.format(e=e)).T for e in range(cfg.moe.num_experts)])
        return _to_t5pod(kind, take(name), cfg)

    for side in ("encoder", "decoder"):
        for prefix, blocks, table in _layer_slots(cfg, side):
            for ours, theirs, kind in table:
                stacked = np.stack([read(kind, f"{side}.block.{i}.{theirs}") for i in blocks])
                param_paths.put(pure, f"{prefix}.{ours}", stacked)
        relpos = take(f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
        param_paths.put(pure, f"{side}.relative_position_bias.embedding", relpos.T)
        param_paths.put(pure, f"{side}.final_norm.scale", take(f"{side}.final_layer_norm.weight"))
    return pure


def params_to_hf(pure: dict, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """HF tensor names -> float32 arrays for a pure t5pod param dict."""
    _check_rms(cfg)
    shared = np.asarray(pure["shared"], np.float32)
    out = {"shared.weight": shared, "encoder.embed_tokens.weight": shared,
           "decoder.embed_tokens.weight": shared}
    out["lm_head.weight"] = (shared if cfg.tie_word_embeddings
                             else np.asarray(pure["lm_head"], np.float32).T)
    for side in ("encoder", "decoder"):
        for prefix, blocks, table in _layer_slots(cfg, side):
            for ours, theirs, kind in table:
                stacked = np.asarray(param_paths.get(pure, f"{prefix}.{ours}"), np.float32)
                for b, i in enumerate(blocks):
                    name = f"{side}.block.{i}.{theirs}"
                    if kind == "experts":
                        for e, w in enumerate(stacked[b]):
                            out[name.format(e=e)] = w.T
                    else:
                        out[name] = _to_hf(kind, stacked[b], cfg)
        relpos = np.asarray(param_paths.get(pure, f"{side}.relative_position_bias.embedding"),
                            np.float32)
        out[f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = relpos.T
        out[f"{side}.final_layer_norm.weight"] = np.asarray(
            param_paths.get(pure, f"{side}.final_norm.scale"), np.float32)
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


def _read_hf_json(path: str) -> tuple[dict, str]:
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"{path} is not an HF model directory: no config.json")
    with open(cfg_path) as f:
        return json.load(f), cfg_path


def read_config(path: str, **overrides) -> ModelConfig:
    """The ModelConfig of the HF directory `path`, its head read as transformers builds it."""
    hf, source = _read_hf_json(path)
    _check_architecture(hf, source)
    head = read_safetensors(path, names=("shared.weight", "lm_head.weight"))
    return config_from_hf(hf, source, own_head=has_own_head(hf, head), **overrides)


def read_params(path: str, cfg: ModelConfig) -> dict:
    """The HF directory's weights as a pure t5pod param dict for `cfg` (shapes checked by
    `model_from_params`)."""
    hf, _ = _read_hf_json(path)
    tensors = read_safetensors(path)
    vocab = tensors.get("shared.weight", np.zeros((0, 0))).shape
    if vocab != (cfg.vocab_size, cfg.d_model):
        raise ValueError(f"{path}: shared.weight has shape {vocab}, expected "
                         f"(vocab_size={cfg.vocab_size}, d_model={cfg.d_model}) from the config")
    return params_from_hf(tensors, cfg, scaled=scales_output(hf))


def load(path: str, **overrides) -> EncoderDecoder:
    """An EncoderDecoder with the weights of the HF T5 directory `path`.

    `overrides` replace ModelConfig fields that HF does not store (dtype, remat_policy, ...).
    """
    cfg = read_config(path, **overrides)
    return model_from_params(cfg, read_params(path, cfg))


def save(model: EncoderDecoder, path: str) -> None:
    """Write `model` as an HF T5ForConditionalGeneration directory (config.json + safetensors),
    or SwitchTransformersForConditionalGeneration for an MoE model."""
    cfg = model.config
    os.makedirs(path, exist_ok=True)
    pure = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    save_file(params_to_hf(pure, cfg), os.path.join(path, "model.safetensors"),
              metadata={"format": "pt"})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config_to_hf(cfg), f, indent=2)
