"""Read t5x checkpoints (T5 1.0/1.1, ByT5, mT5, Switch) into t5pod params, without t5x.

`load(path, config=None)` builds an EncoderDecoder; `read_params(path, config)` gives the
pure param dict (the layout `hf.params_from_hf` gives); `read_config(path)` the config.
`path` is a `checkpoint_N` directory, the msgpack `checkpoint` file in one, or a model_dir
holding `checkpoint_N` directories (the highest step is read).

Layouts (t5x/checkpoints.py): the legacy one is a msgpack file `{version, optimizer: {target,
state}}` (flax.serialization) with small arrays inline and the others as tensorstore zarr
specs whose kvstore path (the dotted param path) is relative to the checkpoint directory;
the orbax one is an orbax PyTree under `checkpoint_N/state`. Names (t5x/examples/t5,
flaxformer): `token_embedder/embedding`, `{encoder,decoder}/layers_{i}/...`,
`{side}/relpos_bias/rel_embedding` [heads, buckets], `decoder/logits_dense/kernel` when the
head is untied (T5 1.1; T5 1.0 uses the embedding, scaled by d_model^-0.5, as t5pod's tied
head does), `mlp/wi` (one activation) or `mlp/wi_0`, `wi_1`, ... (one per activation of
`mlp_activations`; without config.gin, `wi` reads as relu and `wi_0`,`wi_1` as T5 1.1's
gated-GELU), MoE layers `mlp/router/
router_weights/w/kernel` and `mlp/expert/{wi,wo}/kernel` with a leading expert axis.
Attention kernels are [d_model, heads*d_kv] (or [d_model, heads, d_kv]); heads come from
the config and are checked against the relpos bias. Scanned checkpoints (scalable_t5,
flaxformer `scan_layers`) hold `{side}/{side}/...` with the layer axis at position 1, and
their per-layer relpos biases must all be equal (t5pod shares one per stack).

t5x stores no model config: `config` is a ModelConfig; without it, the fields are read from
the shapes and from t5x's `config.gin` next to the checkpoint (`network.T5Config`), which
must agree with them.
"""

from __future__ import annotations

import ast
import glob
import os
import re

import jax
import numpy as np

from model_zoo.config import GATED_GELU, ModelConfig, MoEConfig
from model_zoo.ffn import check_activations, projection_names
from model_zoo.model_def import model_def
from model_zoo.interop import param_paths
from model_zoo.interop.hf import model_from_params
from model_zoo.moe.sparse_stack import sparse_position
from model_zoo.t5 import EncoderDecoder

_ORBAX_MARKERS = ("_METADATA", "_CHECKPOINT_METADATA", "manifest.ocdbt")


# Finding and reading a checkpoint -------------------------------------------------------

def find(path: str) -> tuple[str, str]:
    """("legacy", msgpack file) or ("orbax", state directory) for a t5x checkpoint path."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return "legacy", path
    steps = glob.glob(os.path.join(path, "checkpoint_*"))
    steps = [s for s in steps if re.fullmatch(r"checkpoint_\d+", os.path.basename(s))]
    if steps and not os.path.exists(os.path.join(path, "checkpoint")):
        path = max(steps, key=lambda s: int(s.rsplit("_", 1)[1]))
    state = os.path.join(path, "state")
    if any(os.path.exists(os.path.join(state, m)) for m in _ORBAX_MARKERS):
        return "orbax", state
    for candidate in (os.path.join(path, "checkpoint"), os.path.join(state, "checkpoint")):
        if os.path.isfile(candidate):
            return "legacy", candidate
    found = sorted(os.listdir(path)) if os.path.isdir(path) else "nothing"
    raise FileNotFoundError(f"{path} is not a t5x checkpoint: expected a msgpack `checkpoint` "
                            "file, an orbax `state/` directory or `checkpoint_N` directories; "
                            f"found {found}")


def _is_spec(x) -> bool:
    return isinstance(x, dict) and "driver" in x and ("kvstore" in x or "path" in x)


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not _is_spec(value):
            flat.update(_flatten(value, name + "/"))
        else:
            flat[name] = value
    return flat


def _read_zarr(spec: dict, ckpt_dir: str) -> np.ndarray:
    """An array t5x wrote with tensorstore; paths are relative to the checkpoint directory."""
    import tensorstore as ts

    def lists(v):  # flax's state dicts turn lists into {"0": .., "1": ..}
        return [v[str(i)] for i in range(len(v))] if isinstance(v, dict) and all(
            k.isdigit() for k in v) else v

    spec = {**spec, "metadata": {k: lists(v) for k, v in spec.get("metadata", {}).items()
                                 if k not in ("chunks", "compressor")}}
    kvstore = dict(spec.get("kvstore", {}))
    relative = kvstore.pop("path", None) or spec.pop("path", None)  # new / old tensorstore
    if relative is None:
        raise ValueError(f"t5x tensorstore spec without a path: {spec}")
    # gs:// checkpoints copied to disk keep their gcs driver and a dummy bucket
    spec["kvstore"] = {"driver": "file", "path": os.path.join(ckpt_dir, relative)}
    if spec.get("dtype") == "uint16":
        raise ValueError(f"{relative}: bfloat16 stored as uint16 (t5x checkpoint version < 3) "
                         "is not supported; re-save it with a newer t5x")
    return np.asarray(ts.open(spec, open=True, read=True).result().read().result())


def _legacy_tree(path: str) -> dict:
    from flax import serialization

    with open(path, "rb") as f:
        contents = serialization.msgpack_restore(f.read())
    return contents["optimizer"] if "optimizer" in contents else contents


def _orbax_tree(state_dir: str) -> dict:
    import orbax.checkpoint as ocp

    ckpt = ocp.PyTreeCheckpointer()
    meta = ckpt.metadata(state_dir)
    meta = getattr(getattr(meta, "item_metadata", meta), "tree", meta)
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
    return ckpt.restore(state_dir, restore_args=args)


def read_target(path: str) -> dict[str, np.ndarray]:
    """The checkpoint's params (`target`) as {'encoder/layers_0/...': float32 array}."""
    kind, where = find(path)
    tree = _legacy_tree(where) if kind == "legacy" else _orbax_tree(where)
    if "target" not in tree:
        raise ValueError(f"{where}: no `target` params in the t5x checkpoint (top-level keys "
                         f"{sorted(tree)})")
    ckpt_dir = os.path.dirname(where)
    return {name: np.asarray(_read_zarr(v, ckpt_dir) if _is_spec(v) else v, np.float32)
            for name, v in _flatten(tree["target"]).items()}


# Names ----------------------------------------------------------------------------------

_ATTENTION = [("query", "in_proj"), ("key", "in_proj"), ("value", "in_proj"),
              ("out", "out_proj")]


def _layer_entries(side: str, cfg: ModelConfig, sparse: bool):
    """[(t5pod name in a stacked layer, t5x name in layer i, kind)]."""
    if side == "encoder":
        parts = [("pre_attention_norm", "pre_attention_layer_norm", "attention", "attention")]
    else:
        parts = [("pre_self_attention_norm", "pre_self_attention_layer_norm",
                  "self_attention", "self_attention"),
                 ("pre_cross_attention_norm", "pre_cross_attention_layer_norm",
                  "cross_attention", "encoder_decoder_attention")]
    entries = []
    for norm, t5x_norm, attn, t5x_attn in parts:
        entries.append((f"{norm}.scale", f"{t5x_norm}/scale", "vector"))
        entries += [(f"{attn}.{n}", f"{t5x_attn}/{n}/kernel", k) for n, k in _ATTENTION]
    entries.append(("pre_mlp_norm.scale", "pre_mlp_layer_norm/scale", "vector"))
    wis = list(projection_names(cfg.mlp_activations))
    if sparse:
        entries.append(("mlp.router", "mlp/router/router_weights/w/kernel", "dense"))
        entries += [(f"mlp.{w}", f"mlp/expert/{w}/kernel", "dense") for w in wis + ["wo"]]
    else:
        entries += [(f"mlp.{w}", f"mlp/{w}/kernel", "dense") for w in wis + ["wo"]]
    return entries


def _layer_slots(cfg: ModelConfig, side: str):
    """[(t5pod prefix of a stacked layer, the t5x layer indices it stacks, sparse?)]."""
    n = cfg.num_encoder_layers if side == "encoder" else cfg.num_decoder_layers
    step = cfg.moe.sparse_step(side) if cfg.moe is not None else 0
    if not step:
        return [(f"{side}.layers.layer", list(range(n)), False)]
    return [(f"{side}.layers.blocks.layer.layer_{j}", list(range(j, n, step)),
             j == sparse_position(step)) for j in range(step)]


def _stored_forms(kind: str, want: tuple) -> list[tuple]:
    """Per-layer shapes t5x may store for a t5pod param of shape `want` (first: t5x's)."""
    if kind == "in_proj":   # t5pod [d, h, k]
        return [(want[0], want[1] * want[2]), want]
    if kind == "out_proj":  # t5pod [h, k, d]
        return [(want[0] * want[1], want[2]), want]
    return [want]


def _describe(cfg: ModelConfig) -> str:
    return (f"config (vocab_size={cfg.vocab_size}, d_model={cfg.d_model}, d_ff={cfg.d_ff}, "
            f"num_heads={cfg.num_heads}, d_kv={cfg.d_kv}, num_encoder_layers="
            f"{cfg.num_encoder_layers}, num_decoder_layers={cfg.num_decoder_layers}, "
            f"relative_attention_num_buckets={cfg.relative_attention_num_buckets})")


class _Target:
    """The flat t5x params, handed out once each, every shape checked against the config."""

    def __init__(self, flat: dict, cfg: ModelConfig):
        self.flat, self.cfg, self.used = flat, cfg, set()

    def take(self, name: str, forms: list[tuple], meaning: str = "") -> np.ndarray:
        if name not in self.flat:
            raise KeyError(f"t5x checkpoint lacks param {name!r} that {_describe(self.cfg)} "
                           "requires")
        value = self.flat[name]
        if value.shape not in forms:
            raise ValueError(f"t5x param {name} has shape {value.shape}, expected {forms[0]}"
                             f"{meaning} for {_describe(self.cfg)}")
        self.used.add(name)
        return value

    def scanned(self, side: str) -> bool:
        return any(k.startswith(f"{side}/{side}/") for k in self.flat)

    def layer(self, side: str, i: int, name: str, forms: list[tuple]) -> np.ndarray:
        """Layer i's `name`; scanned checkpoints hold every layer on axis 1."""
        if not self.scanned(side):
            return self.take(f"{side}/layers_{i}/{name}", forms)
        n = self.cfg.num_encoder_layers if side == "encoder" else self.cfg.num_decoder_layers
        scanned = [f[:1] + (n,) + f[1:] for f in forms]
        return self.take(f"{side}/{side}/{name}", scanned, " (layer axis at 1)")[:, i]


def _relpos(target: _Target, side: str, cfg: ModelConfig) -> np.ndarray:
    want = [(cfg.num_heads, cfg.relative_attention_num_buckets)]
    meaning = " = (num_heads, relative_attention_num_buckets)"
    shared = f"{side}/relpos_bias/rel_embedding"
    if shared in target.flat or not (target.scanned(side) or
                                     f"{side}/layers_0/relpos_bias/rel_embedding" in target.flat):
        return target.take(shared, want, meaning)
    n = cfg.num_encoder_layers if side == "encoder" else cfg.num_decoder_layers
    if target.scanned(side):
        stacked = target.take(f"{side}/{side}/relpos_bias/rel_embedding",
                              [(want[0][0], n, want[0][1])], meaning + " with layers at axis 1")
        layers = [stacked[:, i] for i in range(n)]
    else:
        layers = [target.take(f"{side}/layers_{i}/relpos_bias/rel_embedding", want, meaning)
                  for i in range(n)]
    if any(not np.array_equal(x, layers[0]) for x in layers[1:]):
        raise ValueError(f"t5x checkpoint has a different relative position bias in each "
                         f"{side} layer (umT5 / scalable_t5 style); t5pod shares one per stack")
    return layers[0]


def params_from_t5x(flat: dict[str, np.ndarray], cfg: ModelConfig) -> dict:
    """A pure t5pod param dict for `cfg` from flat t5x `target` params; every t5x param
    must be used and have the shape the config implies."""
    expected = model_def(lambda r: EncoderDecoder(cfg, rngs=r)).abstract_params()

    def shape(dotted):
        return tuple(param_paths.get(expected, dotted).shape)

    if cfg.byte_encoder is not None or cfg.universal is not None or cfg.norm != "rms":
        raise ValueError("t5x checkpoints hold plain T5 / Switch models; a byte_encoder, "
                         f"universal or norm={cfg.norm!r} config has no t5x layout")
    target = _Target(flat, cfg)
    pure: dict = {"shared": target.take("token_embedder/embedding", [shape("shared")],
                                        " = (vocab_size, d_model)")}
    head = "decoder/logits_dense/kernel"
    if cfg.tie_word_embeddings and head in flat:
        raise ValueError(f"t5x checkpoint has an untied head ({head}, T5 1.1 style) but the "
                         "config says tie_word_embeddings=True; use tie_word_embeddings=False")
    if not cfg.tie_word_embeddings:
        if head not in flat:
            raise ValueError(f"t5x checkpoint has no {head}: its logits use the embedding "
                             "(T5 1.0 style); use tie_word_embeddings=True")
        pure["lm_head"] = target.take(head, [shape("lm_head")], " = (d_model, vocab_size)")
    for side in ("encoder", "decoder"):
        rel = _relpos(target, side, cfg)
        param_paths.put(pure, f"{side}.relative_position_bias.embedding", rel)
        norm = f"{side}.final_norm.scale"
        param_paths.put(pure, norm, target.take(f"{side}/{side}_norm/scale", [shape(norm)]))
        for prefix, layers, sparse in _layer_slots(cfg, side):
            for ours, theirs, kind in _layer_entries(side, cfg, sparse):
                want = shape(f"{prefix}.{ours}")[1:]
                forms = _stored_forms(kind, want)
                param_paths.put(pure, f"{prefix}.{ours}", np.stack(
                    [target.layer(side, i, theirs, forms).reshape(want) for i in layers]))
    unused = sorted(set(flat) - target.used)
    if unused:
        raise ValueError(f"t5x checkpoint params that {_describe(cfg)} does not use (MoE "
                         f"layout, layer count or architecture differ?): {unused[:8]}"
                         f"{' ...' if len(unused) > 8 else ''}")
    return pure


# Config ---------------------------------------------------------------------------------

def config_from_shapes(flat: dict[str, np.ndarray], **overrides) -> ModelConfig:
    """The ModelConfig that t5x param shapes imply; what shapes do not fix (max distance,
    dropout, MoE capacity) keeps ModelConfig's and MoEConfig's defaults unless overridden."""
    vocab, d = flat["token_embedder/embedding"].shape
    fields: dict = dict(vocab_size=vocab, d_model=d,
                        tie_word_embeddings="decoder/logits_dense/kernel" not in flat)
    layers = {}
    for side in ("encoder", "decoder"):
        scanned = f"{side}/{side}/pre_mlp_layer_norm/scale"
        if scanned in flat:
            layers[side] = flat[scanned].shape[1]
        else:
            layers[side] = len({m.group(1) for k in flat
                                if (m := re.match(rf"{side}/layers_(\d+)/", k))})
    fields.update(num_encoder_layers=layers["encoder"], num_decoder_layers=layers["decoder"])
    rel = flat.get("encoder/relpos_bias/rel_embedding")
    rel = rel if rel is not None else next(
        v for k, v in flat.items() if k.startswith("encoder/") and k.endswith("rel_embedding"))
    heads, buckets = rel.shape[0], rel.shape[-1]
    name, query = next((k, v) for k, v in flat.items() if k.endswith("attention/query/kernel"))
    per_layer = query.shape[1] if re.match(r"(encoder|decoder)/\1/", name) else 1
    inner = int(np.prod(query.shape)) // (d * per_layer)
    fields.update(num_heads=heads, d_kv=inner // heads, relative_attention_num_buckets=buckets)
    fields["mlp_activations"] = _activations_from_shapes(flat, overrides.pop(
        "mlp_activations", None))
    wi = next(v for k, v in flat.items() if re.search(r"mlp/(expert/)?wi(_0)?/kernel$", k))
    fields["d_ff"] = wi.shape[-1]
    if any("/mlp/expert/" in k for k in flat):
        fields["moe"] = _moe_from_shapes(flat, layers)
    fields.update(overrides)
    return ModelConfig(**fields)


def _moe_from_shapes(flat: dict, layers: dict) -> MoEConfig:
    steps = {}
    for side in ("encoder", "decoder"):
        sparse = sorted(int(m.group(1)) for k in flat
                        if (m := re.match(rf"{side}/layers_(\d+)/mlp/router/", k)))
        step = layers[side] // len(sparse) if sparse else 0
        if sparse and sparse != list(range(sparse_position(step), layers[side], step)):
            raise ValueError(f"t5x checkpoint has MoE {side} layers {sparse}; t5pod places "
                             f"them at {sparse_position(step)}, {sparse_position(step)}+N, ... "
                             f"(every N-th layer, N={step})")
        steps[side] = step
    router = next(v for k, v in flat.items() if k.endswith("router_weights/w/kernel"))
    return MoEConfig(num_experts=router.shape[-1], encoder_sparse_step=steps["encoder"],
                     decoder_sparse_step=steps["decoder"])


_GIN_FIELDS = {"vocab_size": "vocab_size", "emb_dim": "d_model", "num_heads": "num_heads",
               "num_encoder_layers": "num_encoder_layers",
               "num_decoder_layers": "num_decoder_layers", "head_dim": "d_kv",
               "mlp_dim": "d_ff", "dropout_rate": "dropout_rate"}
# What the projection count means when config.gin does not say (t5x's T5 1.0 and 1.1)
_DEFAULT_ACTIVATIONS = {1: ("relu",), 2: GATED_GELU}


def _activations_from_shapes(flat: dict, given: tuple | None) -> tuple[str, ...]:
    """`given` (from config.gin or the caller) checked against the number of `wi` kernels;
    without it, t5x's defaults for that number."""
    indices = {m.group(2) for k in flat
               if (m := re.search(r"mlp/(expert/)?wi(_\d+)?/kernel$", k))}
    count = len(indices)
    if given is not None:
        if len(given) != count:
            raise ValueError(f"mlp_activations={tuple(given)!r} names {len(given)} activation(s) "
                             f"but the t5x checkpoint has {count} MLP input projection(s)")
        return tuple(given)
    if count not in _DEFAULT_ACTIVATIONS:
        raise ValueError(f"the t5x checkpoint has {count} MLP input projections and no "
                         "config.gin names their activations; give mlp_activations")
    return _DEFAULT_ACTIVATIONS[count]


def read_gin(path: str) -> dict:
    """ModelConfig fields from the `network.T5Config` bindings of a t5x config.gin."""
    with open(path) as f:
        text = f.read()
    macros, bindings, block = {}, {}, None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if re.fullmatch(r"[\w.]+:", line.strip()):  # a `scope.Name:` block of bindings
            block = line.strip()[:-1]
            continue
        m = re.fullmatch(r"\s*([\w./]+)\s*=\s*(.+)", line)
        if not m:
            continue
        name, value = m.groups()
        if raw[:1].isspace() and block:
            name = f"{block}.{name}"
        elif not raw[:1].isspace():
            block = None
        if "." not in name:
            macros[name] = value.strip()
        elif name.startswith("network.T5Config."):
            bindings[name.rsplit(".", 1)[1]] = value.strip()
    fields = {}
    for key, value in bindings.items():
        while value.startswith("%") and value[1:] in macros:
            value = macros[value[1:]]
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            continue  # gin references (@..., %gin.REQUIRED): not a model dimension
        if key in _GIN_FIELDS:
            fields[_GIN_FIELDS[key]] = value
        elif key == "mlp_activations":
            fields["mlp_activations"] = check_activations(
                value, f"{path}: network.T5Config.mlp_activations")
        elif key == "logits_via_embedding":
            fields["tie_word_embeddings"] = bool(value)
    return fields


def _gin_file(path: str) -> str | None:
    ckpt_dir = os.path.dirname(find(path)[1])
    for d in (ckpt_dir, os.path.dirname(ckpt_dir), os.path.dirname(os.path.dirname(ckpt_dir))):
        if os.path.isfile(os.path.join(d, "config.gin")):
            return os.path.join(d, "config.gin")
    return None


def read_config(path: str, flat: dict | None = None, **overrides) -> ModelConfig:
    """The config of a t5x checkpoint: its shapes, checked against config.gin when found."""
    flat = read_target(path) if flat is None else flat
    gin = _gin_file(path)
    fields = read_gin(gin) if gin is not None else {}
    named = {"mlp_activations": fields.pop("mlp_activations")} if (
        "mlp_activations" in fields and "mlp_activations" not in overrides) else {}
    try:
        cfg = config_from_shapes(flat, **named, **overrides)  # shapes check the gin's count
    except ValueError as e:
        if not named:
            raise
        raise ValueError(f"{gin}: {e}") from None
    if gin is not None:
        clash = {k: (v, getattr(cfg, k)) for k, v in fields.items()
                 if k not in overrides and k != "dropout_rate" and getattr(cfg, k) != v}
        if clash:
            raise ValueError(f"{gin} disagrees with the checkpoint's shapes: "
                             + ", ".join(f"{k}={g!r} (shapes: {s!r})"
                                         for k, (g, s) in clash.items()))
        if "dropout_rate" in fields and "dropout_rate" not in overrides:
            cfg = cfg.replace(dropout_rate=float(fields["dropout_rate"]))
    return cfg


# Entry points ---------------------------------------------------------------------------

def read_params(path: str, config: ModelConfig) -> dict:
    """The t5x checkpoint's params as a pure t5pod param dict for `config`."""
    return params_from_t5x(read_target(path), config)


def load(path: str, config: ModelConfig | None = None, **overrides) -> EncoderDecoder:
    """An EncoderDecoder with the weights of a t5x checkpoint.

    `config`: the model's ModelConfig (t5x stores none); without it, `read_config`.
    `overrides` replace ModelConfig fields (dtype, dropout_rate, ...).
    """
    flat = read_target(path)
    if config is None:
        config = read_config(path, flat, **overrides)
    elif overrides:
        config = config.replace(**overrides)
    if not isinstance(config, ModelConfig):
        raise TypeError(f"t5x.load: config={config!r} is not a ModelConfig")
    return model_from_params(config, params_from_t5x(flat, config))


__all__ = ["find", "read_target", "params_from_t5x", "config_from_shapes", "read_gin",
           "read_config", "read_params", "load"]
