"""MoE groups, capacity, padding and router losses against flaxformer's MoeLayer and routers
(`moe_layers._num_groups`, `_maybe_pad`, the capacity line; `routing._load_balancing_loss`
and `_router_z_loss` with `ignore_padding_tokens`), and t5x's router loss: the mean over
every MoE layer (`t5x/contrib/moe/models.py`). Each definition is written out here in
numpy, by enumeration or a loop over tokens, not through model_zoo."""

import itertools

import jax
import numpy as np
import pytest
from flax import nnx

from model_zoo import EncoderDecoder
from model_zoo.moe import moe_groups
from model_zoo.config import MoEConfig
from model_zoo.model_def import split_params
from model_zoo.moe.moe_layer import MoEFeedForward
from tests.train_helpers import TINY

E = 4


def reference_num_groups(tokens, max_group_size, multiple):
    """flaxformer: the smallest viable count from max(tokens // size, multiple) upward."""
    lowest = max(tokens // max_group_size, multiple)
    viable = [n for n in range(lowest, tokens + 1) if tokens % n == 0 and n % multiple == 0]
    return viable[0] if viable else None


def reference_padding(rows, length, multiple):
    """flaxformer's _maybe_pad: the fewest rows, or the fewest positions unless that adds
    more tokens than the rows would."""
    if rows * length % multiple == 0:
        return 0, 0
    r = min(b for b in range(1, 10 * multiple) if (rows + b) * length % multiple == 0)
    p = min(s for s in range(1, 10 * multiple) if rows * (length + s) % multiple == 0)
    return (r, 0) if p * rows > r * length else (0, p)


def test_group_count_and_padding_are_flaxformers():
    for tokens, size, multiple in itertools.product(range(1, 97), (1, 3, 4, 8, 16, 64),
                                                    (1, 2, 4, 8)):
        want = reference_num_groups(tokens, size, multiple)
        if want is None:
            with pytest.raises(ValueError, match=f"{tokens} tokens do not split"):
                moe_groups.num_groups(tokens, size, multiple)
        else:
            assert moe_groups.num_groups(tokens, size, multiple) == want, (tokens, size)
    assert moe_groups.num_groups(10, 4) == 2              # the floor: groups of 5 > 4
    for rows, length, multiple in itertools.product(range(1, 13), range(1, 13), (2, 4, 8, 32)):
        assert moe_groups.batch_padding(rows, length, multiple) == reference_padding(
            rows, length, multiple), (rows, length, multiple)


def test_capacity_is_flaxformers_rounding():
    for tokens, factor, minimum in itertools.product((8, 10, 12, 40, 4096), (1.0, 1.25, 2.0),
                                                     (1, 4)):
        want = max(int(round(factor * tokens / E)), minimum)  # Python's round: half to even
        assert moe_groups.capacity(tokens, E, factor, minimum) == min(want, tokens)
    assert moe_groups.capacity(10, E, 1.0, 1) == 2         # 2.5 rounds to even
    assert moe_groups.capacity(10, E, 1.0, 1, rounding="ceil") == 3


def test_strict_group_size():
    assert moe_groups.num_groups(64, 16, 4, strict=True) == 4
    with pytest.raises(ValueError, match=r"strict_group_size=True refuses this batch: its 48 "
                                         r"tokens make 8 groups of 6, not group_size=16"):
        moe_groups.num_groups(48, 16, 8, strict=True)
    with pytest.raises(ValueError, match=r"strict_group_size=True is invalid with "
                                         r"group_size=None"):
        MoEConfig(strict_group_size=True)


# The layer under a t5x-style Switch config ------------------------------------------

T5X_SWITCH = MoEConfig(num_experts=E, group_size=16, min_expert_capacity=1,
                       eval_capacity_factor=1.0, encoder_batch_prioritized_routing=True,
                       router_loss_padding="flaxformer")
B, S = 5, 7  # 35 tokens: padded to 5 x 8, four groups of 10, capacity round(2.5) = 2


def ffn(layer, e, x):
    h = jax.nn.gelu(x @ layer.wi_0[...][e], approximate=True) * (x @ layer.wi_1[...][e])
    return np.asarray(h @ layer.wo[...][e])


def flaxformer_layer(layer, x, valid):
    """flaxformer's MoeLayer with TokensChooseMaskedRouter(num_selected_experts=1,
    batch_prioritized_routing=True, ignore_padding_tokens=True): (y, balance, z)."""
    d = x.shape[-1]
    rows, length = reference_padding(B, S, E)
    xp = np.pad(np.asarray(x), ((0, rows), (0, length), (0, 0)))
    vp = np.pad(valid, ((0, rows), (0, length)))
    tokens = xp.shape[0] * xp.shape[1]
    groups = reference_num_groups(tokens, 16, E)
    size = tokens // groups
    cap = max(int(round(1.0 * size / E)), 1)
    flat, real = xp.reshape(groups, size, d), vp.reshape(groups, size).astype(np.float32)
    logits = flat @ np.asarray(layer.router[...])
    probs = np.asarray(jax.nn.softmax(logits, axis=-1)) * real[..., None]
    out = np.zeros_like(flat)
    balance = []
    for g in range(groups):
        expert = np.argmax(probs[g], axis=-1)
        gate = probs[g, np.arange(size), expert]
        filled = np.zeros(E, int)
        for t in np.argsort(-gate, kind="stable"):        # batch-prioritised
            if real[g, t]:
                filled[expert[t]] += 1
                if filled[expert[t]] <= cap:
                    out[g, t] = gate[t] * ffn(layer, expert[t], flat[g, t])
        chose = np.eye(E)[expert] * real[g][:, None]
        balance.append(E ** 2 * np.mean(chose.mean(0) * probs[g].mean(0)))
    lse = np.log(np.exp(logits * real[..., None]).sum(-1))
    y = out.reshape(xp.shape)[:B, :S]
    return y, float(np.mean(balance)), float(np.sum(lse ** 2) / tokens)


def test_t5x_style_switch_layer_reproduces_flaxformer():
    layer = MoEFeedForward(TINY.replace(moe=T5X_SWITCH), "encoder", nnx.Rngs(0))
    valid = np.ones((B, S), bool)
    valid[0, 4:] = valid[3, 2:] = False
    x = jax.random.normal(jax.random.key(2), (B, S, TINY.d_model)) * valid[..., None]
    mdef, params = split_params(layer)
    y, aux = jax.jit(lambda p, x, m: mdef.bind(p).forward(x, m))(params, x, valid)
    want, balance, z = flaxformer_layer(layer, x, valid)
    assert layer.grouping(B, S) == (0, 1, 4)
    np.testing.assert_allclose(np.asarray(y), want, atol=1e-5)
    assert (np.abs(want).sum(-1)[valid] == 0).any()       # capacity 2 dropped some
    assert abs(float(aux["load_balancing_loss"]) - balance) < 1e-5
    assert abs(float(aux["router_z_loss"]) - z) < 1e-5
    assert aux["router_logits"].shape == (B, S, E)
    # t5pod's own definition keeps padding out of the means: a different number
    own = MoEFeedForward(TINY.replace(moe=MoEConfig(**{**T5X_SWITCH.__dict__,
                                                       "router_loss_padding": "excluded"})),
                         "encoder", nnx.Rngs(0))
    odef, oparams = split_params(own)
    z_own = jax.jit(lambda p, x, m: odef.bind(p).forward(x, m)[1]["router_z_loss"])
    assert abs(float(z_own(oparams, x, valid)) - z) > 1e-3


def test_router_losses_are_t5xs_mean_over_moe_layers():
    """Two MoE layers in the encoder, one in the decoder: t5x's loss is the mean of the
    three per-layer losses, each computed here from that layer's router logits."""
    moe = MoEConfig(num_experts=E, encoder_sparse_step=1, decoder_sparse_step=2,
                    ignore_padding_tokens=False, router_z_loss_weight=0.001)
    cfg = TINY.replace(num_encoder_layers=2, num_decoder_layers=2, moe=moe)
    model = EncoderDecoder(cfg, rngs=nnx.Rngs(0))
    enc = jax.random.randint(jax.random.key(3), (3, 6), 2, TINY.vocab_size)
    dec = jax.random.randint(jax.random.key(4), (3, 5), 2, TINY.vocab_size)
    mdef, params = split_params(model)
    _, aux = jax.jit(lambda p, e, d: mdef.bind(p)(e, d, return_aux=True))(params, enc, dec)
    per_layer = {"load_balancing_loss": [], "router_z_loss": []}
    for side in ("encoder", "decoder"):
        for logits in np.asarray(aux[f"{side}_router_logits"], np.float64):  # [B, S, E]
            probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
            chose = np.eye(E)[np.argmax(probs, -1)]       # a row per group (group_size None)
            per_layer["load_balancing_loss"].append(
                np.mean(E * np.sum(chose.mean(1) * probs.mean(1), axis=-1)))
            per_layer["router_z_loss"].append(np.mean(np.log(np.exp(logits).sum(-1)) ** 2))
    assert len(per_layer["router_z_loss"]) == 3
    for name, values in per_layer.items():
        assert abs(float(aux[name]) - np.mean(values)) < 1e-5, name
        stack_means = np.mean(values[:2]) + values[2]     # HF's sum differs here
        assert abs(float(aux[name]) - stack_means) > 1e-4, name
    want = 0.01 * np.mean(per_layer["load_balancing_loss"]) + 0.001 * np.mean(
        per_layer["router_z_loss"])
    assert abs(float(aux["loss"]) - want) < 1e-6
