"""t5x checkpoints, written here exactly as t5x lays them out, load to the HF path's model.

Each case starts from an HF model, maps its weights to t5x names with this file's own table
(t5x/examples/t5 and flaxformer names, t5x shapes) and writes them as t5x does: the legacy
msgpack `checkpoint` (`{version, optimizer: {target, state}}`, small arrays inline through
flax's ndarray extension, others as tensorstore zarr arrays referenced by a spec with a
relative dotted path, some in bfloat16) or the orbax layout (`checkpoint_N/state`). The t5x
reader must give the params `hf.load` gives and transformers' logits.
"""

import json
import os
import re

import ml_dtypes
import numpy as np
import pytest
import tensorstore as ts
import torch
from flax import serialization

from model_zoo.interop import hf, t5x
from training.checkpoints import kinds as sources
from tests.batches import padded_batch
from tests.hf_reference import hf_logits, make_hf_switch, make_hf_t5, t5pod_logits

TOL = 2e-4
QKVO = {"q": "query", "k": "key", "v": "value", "o": "out"}
# (HF name pattern, t5x name template); every matrix but the embedding [vocab, d_model] is
# transposed (torch Linear is [out, in]; the relpos embedding [buckets, heads])
RULES = [
    (r"shared\.weight", "token_embedder/embedding"),
    (r"lm_head\.weight", "decoder/logits_dense/kernel"),
    (r"(encoder|decoder)\.final_layer_norm\.weight", r"\1/\1_norm/scale"),
    (r"(encoder|decoder)\.block\.0\.layer\.0\.SelfAttention\.relative_attention_bias\.weight",
     r"\1/relpos_bias/rel_embedding"),
    (r"encoder\.block\.(\d+)\.layer\.0\.layer_norm\.weight",
     r"encoder/layers_\1/pre_attention_layer_norm/scale"),
    (r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.([qkvo])\.weight",
     r"encoder/layers_\1/attention/\2/kernel"),
    (r"encoder\.block\.(\d+)\.layer\.1\.layer_norm\.weight",
     r"encoder/layers_\1/pre_mlp_layer_norm/scale"),
    (r"decoder\.block\.(\d+)\.layer\.0\.layer_norm\.weight",
     r"decoder/layers_\1/pre_self_attention_layer_norm/scale"),
    (r"decoder\.block\.(\d+)\.layer\.0\.SelfAttention\.([qkvo])\.weight",
     r"decoder/layers_\1/self_attention/\2/kernel"),
    (r"decoder\.block\.(\d+)\.layer\.1\.layer_norm\.weight",
     r"decoder/layers_\1/pre_cross_attention_layer_norm/scale"),
    (r"decoder\.block\.(\d+)\.layer\.1\.EncDecAttention\.([qkvo])\.weight",
     r"decoder/layers_\1/encoder_decoder_attention/\2/kernel"),
    (r"decoder\.block\.(\d+)\.layer\.2\.layer_norm\.weight",
     r"decoder/layers_\1/pre_mlp_layer_norm/scale"),
    (r"(encoder|decoder)\.block\.(\d+)\.layer\.\d\.(?:DenseReluDense|mlp)\.(wi|wi_0|wi_1|wo)\.weight",
     r"\1/layers_\2/mlp/\3/kernel"),
    (r"(encoder|decoder)\.block\.(\d+)\.layer\.\d\.mlp\.router\.classifier\.weight",
     r"\1/layers_\2/mlp/router/router_weights/w/kernel"),
    (r"(encoder|decoder)\.block\.(\d+)\.layer\.\d\.mlp\.experts\.expert_(\d+)\.(wi|wo)\.weight",
     r"\1/layers_\2/mlp/expert/\4/kernel#\3"),  # #e: stacked on a leading expert axis
]


def t5x_params(state: dict) -> dict:
    """HF state dict -> flat t5x `target` params (t5x/examples/t5 layout, 2-D kernels)."""
    flat, experts = {}, {}
    for name, w in state.items():
        if "embed_tokens" in name or (name == "lm_head.weight" and
                                      np.array_equal(w, state["shared.weight"])):
            continue  # tied heads: t5x's logits use the embedding
        for pattern, template in RULES:
            if re.fullmatch(pattern, name):
                new = re.sub(r"/([qkvo])/kernel", lambda m: f"/{QKVO[m.group(1)]}/kernel",
                             re.sub(pattern, template, name))
                w = w.T if w.ndim == 2 and name != "shared.weight" else w
                if "#" in new:
                    base, e = new.split("#")
                    experts.setdefault(base, {})[int(e)] = w
                else:
                    flat[new] = w
                break
        else:
            raise AssertionError(f"no t5x name for {name}")
    for base, per_expert in experts.items():
        flat[base] = np.stack([per_expert[e] for e in sorted(per_expert)])
    return flat


def scanned(flat: dict, heads: int) -> dict:
    """The scanned layout (scalable_t5 / flaxformer scan): `{side}/{side}/...` with the layer
    axis at 1, attention kernels kept [d, heads, d_kv] / [heads, d_kv, d], and a relpos bias
    in every layer."""
    out, stacks = {}, {}
    for name, w in flat.items():
        m = re.fullmatch(r"(encoder|decoder)/layers_(\d+)/(.+)", name)
        if not m:
            out[name] = w
            continue
        side, i, rest = m.groups()
        if rest.endswith(("query/kernel", "key/kernel", "value/kernel")):
            w = w.reshape(w.shape[0], heads, -1)
        elif rest.endswith("out/kernel"):
            w = w.reshape(heads, -1, w.shape[1])
        stacks.setdefault(f"{side}/{side}/{rest}", {})[int(i)] = w
    for name, per_layer in stacks.items():
        out[name] = np.stack([per_layer[i] for i in sorted(per_layer)], axis=1)
    for side in ("encoder", "decoder"):
        rel = out.pop(f"{side}/relpos_bias/rel_embedding")
        n = out[f"{side}/{side}/pre_mlp_layer_norm/scale"].shape[1]
        out[f"{side}/{side}/relpos_bias/rel_embedding"] = np.stack([rel] * n, axis=1)
    return out


def _nest(flat: dict) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _adafactor_state(flat: dict) -> dict:
    """A t5x Adafactor `state` (factored v_row/v_col for matrices, v for vectors)."""
    states = {k: ({"v_row": np.zeros(v.shape[:-1], np.float32),
                   "v_col": np.zeros(v.shape[:-2] + v.shape[-1:], np.float32)}
                  if v.ndim >= 2 else {"v": np.zeros_like(v)}) for k, v in flat.items()}
    return {"step": np.int32(1000), "param_states": _nest(states)}


def write_legacy(ckpt_dir: str, flat: dict, bf16=()) -> None:
    """As t5x's Checkpointer.save: matrices to tensorstore zarr (a spec with a path relative
    to the checkpoint directory in their place), vectors inline; `bf16` names in bfloat16."""
    os.makedirs(ckpt_dir)
    target = {}
    for name, w in flat.items():
        w = w.astype(ml_dtypes.bfloat16 if name in bf16 else np.float32)
        if w.ndim < 2:
            target[name] = w
            continue
        rel = "target." + name.replace("/", ".")
        spec = {"driver": "zarr", "dtype": w.dtype.name,
                "kvstore": {"driver": "file", "path": rel},
                "metadata": {"compressor": {"id": "gzip"}, "shape": list(w.shape),
                             "chunks": list(w.shape)}}
        absolute = {**spec, "kvstore": {"driver": "file", "path": os.path.join(ckpt_dir, rel)}}
        ts.open(absolute, create=True, open=True).result().write(w).result()
        assert os.path.isdir(os.path.join(ckpt_dir, rel))
        target[name] = ts.Spec(spec).to_json()  # t5x's ts.Spec serializer: its JSON as is
    contents = {"version": 3, "optimizer": {"target": _nest(target),
                                            "state": _adafactor_state(flat)}}
    with open(os.path.join(ckpt_dir, "checkpoint"), "wb") as f:
        f.write(serialization.msgpack_serialize(contents))


def write_orbax(ckpt_dir: str, flat: dict) -> None:
    """As t5x's orbax Checkpointer: the train state dict as an orbax PyTree in `state/`."""
    import orbax.checkpoint as ocp

    tree = {"target": _nest({k: np.asarray(v, np.float32) for k, v in flat.items()}),
            "state": _adafactor_state(flat)}
    ocp.PyTreeCheckpointer().save(os.path.join(ckpt_dir, "state"), tree)


def _bf16_exact(model):
    with torch.no_grad():  # weights representable in bfloat16, so bf16 storage is exact
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    return model


CASES = {  # name: (HF model, writer, layout)
    "t5_1_0": (lambda: make_hf_t5("relu_tied"), "legacy", "plain"),
    "t5_1_1": (lambda: make_hf_t5("gated_untied"), "orbax", "plain"),
    "byt5": (lambda: make_hf_t5("byt5"), "legacy", "plain"),
    "switch": (make_hf_switch, "legacy", "plain"),
    "scanned": (lambda: make_hf_t5("gated_untied"), "legacy", "scanned"),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    """(name, model_dir, checkpoint_N path, HF-path model, transformers' logits, batch)."""
    build, writer, layout = CASES[request.param]
    ref = _bf16_exact(build())
    root = tmp_path_factory.mktemp(request.param)
    ref.save_pretrained(root / "hf")
    via_hf = hf.load(str(root / "hf"))
    state = {k: v.detach().numpy().copy() for k, v in ref.state_dict().items()}
    flat = t5x_params(state)
    if layout == "scanned":
        flat = scanned(flat, via_hf.config.num_heads)
    ckpt = str(root / "model" / "checkpoint_1000")
    if writer == "orbax":
        write_orbax(ckpt, flat)
    else:
        bf16 = {"token_embedder/embedding", next(k for k in flat if k.endswith("norm/scale"))}
        write_legacy(ckpt, flat, bf16=bf16)
    enc, dec, tgt = padded_batch(via_hf.config.vocab_size, batch=2, input_len=12, target_len=9)
    want = hf_logits(ref, enc, dec, (enc > 0).astype(np.int64))
    return request.param, str(root / "model"), ckpt, via_hf, want, (enc, dec, tgt > 0)


def _flat_params(model):
    from model_zoo.model_def import split_params

    import jax
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in
            jax.tree_util.tree_flatten_with_path(split_params(model)[1])[0]}


def test_loads_to_the_hf_paths_params_and_logits(case):
    name, _, ckpt, via_hf, want, (enc, dec, valid) = case
    if name == "t5_1_0":  # the `checkpoint` file itself is a valid path too
        ckpt = os.path.join(ckpt, "checkpoint")
    model = t5x.load(ckpt, via_hf.config)
    ours, theirs = _flat_params(model), _flat_params(via_hf)
    assert ours.keys() == theirs.keys()
    for key in theirs:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    got = t5pod_logits(model, enc, dec)
    np.testing.assert_allclose(got[valid], want[valid], atol=TOL, rtol=0)


def test_config_from_shapes_and_config_gin(case):
    """Without a config: dimensions from the shapes, checked against config.gin."""
    name, model_dir, _, via_hf, _, _ = case
    cfg = via_hf.config
    unknown = dict(relative_attention_max_distance=cfg.relative_attention_max_distance,
                   dropout_rate=cfg.dropout_rate)  # not in t5x shapes
    if cfg.moe is not None:
        unknown["moe"] = cfg.moe  # capacity and loss weights are not in the shapes
        got = t5x.config_from_shapes(t5x.read_target(model_dir), **unknown)
        assert got == cfg
        return
    assert t5x.read_config(model_dir, **unknown) == cfg  # model_dir: its latest checkpoint
    gin = (f"DROPOUT = {cfg.dropout_rate}\n"
           "network.T5Config:\n"
           f"  vocab_size = {cfg.vocab_size}  # rounded\n  emb_dim = {cfg.d_model}\n"
           f"  num_heads = {cfg.num_heads}\n  head_dim = {cfg.d_kv}\n"
           f"  mlp_dim = {cfg.d_ff}\n  dropout_rate = %DROPOUT\n"
           f"  mlp_activations = {cfg.mlp_activations!r}\n"
           f"network.T5Config.logits_via_embedding = {cfg.tie_word_embeddings}\n"
           f"network.T5Config.num_encoder_layers = {cfg.num_encoder_layers}\n")
    with open(os.path.join(model_dir, "config.gin"), "w") as f:
        f.write(gin)
    try:
        assert t5x.read_gin(os.path.join(model_dir, "config.gin"))["mlp_activations"] == (
            cfg.mlp_activations)
        got = t5x.read_config(model_dir, relative_attention_max_distance=(
            cfg.relative_attention_max_distance))
        assert got == cfg
        with open(os.path.join(model_dir, "config.gin"), "a") as f:
            f.write(f"network.T5Config.num_heads = {cfg.num_heads * 2}\n")
        with pytest.raises(ValueError, match="config.gin disagrees.*num_heads"):
            t5x.read_config(model_dir)
    finally:
        os.remove(os.path.join(model_dir, "config.gin"))


def test_heads_that_do_not_match_the_relpos_bias_fail_clearly(case):
    name, _, ckpt, via_hf, _, _ = case
    if name not in ("t5_1_1", "scanned"):
        pytest.skip("one plain and one scanned checkpoint suffice")
    cfg = via_hf.config  # 4 heads x 12: 2 heads x 24 fits every attention kernel, not the bias
    wrong = cfg.replace(num_heads=2, d_kv=24)
    with pytest.raises(ValueError) as err:
        t5x.load(ckpt, wrong)
    msg = str(err.value)
    buckets = cfg.relative_attention_num_buckets
    assert "relpos_bias/rel_embedding" in msg and "num_heads=2" in msg
    layers = cfg.num_encoder_layers
    assert str((4, buckets) if name == "t5_1_1" else (4, layers, buckets)) in msg
    assert str((2, buckets) if name == "t5_1_1" else (2, layers, buckets)) in msg


def test_bad_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a t5x checkpoint"):
        t5x.find(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({}))
    with pytest.raises(FileNotFoundError, match="found \\['config.json'\\]"):
        t5x.load(str(tmp_path), None)


def test_detect_names_each_source(case, tmp_path):
    name, model_dir, ckpt, *_ = case
    if name != "t5_1_0":
        pytest.skip("one case suffices")
    root = os.path.dirname(model_dir)
    assert sources.detect(os.path.join(root, "hf")) == "hf"
    for path in (model_dir, ckpt, os.path.join(ckpt, "checkpoint")):
        assert sources.detect(path) == "t5x", path
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "model.json").write_text("{}")
    assert sources.detect(str(tmp_path)) == "t5pod"
    with pytest.raises(FileNotFoundError, match="no checkpoint t5pod reads"):
        sources.detect(str(tmp_path / "checkpoints"))
