"""MoE routing groups across sequences, padding kept out of routing, BPR in the encoder only.

The references are written out here in numpy (the batch flattened, cut into consecutive
groups, the routing rule as a loop over tokens), independent of model_zoo.moe.routing.
"""

import jax
import numpy as np
import pytest
from flax import nnx

import partitioning
from model_zoo import EncoderDecoder
from model_zoo.axes import activation_rules
from model_zoo.config import MoEConfig
from model_zoo.model_def import split_params
from model_zoo.moe.moe_layer import MoEFeedForward
from tests.train_helpers import TINY

E, B, S = 4, 8, 8           # experts, rows, tokens per row
GROUP = 2 * S               # a routing group = two sequences
MOE = MoEConfig(num_experts=E, min_expert_capacity=1, init_scale=1.0, group_size=GROUP)


def make_layer(routing="tokens_choose", **changes):
    moe = MoEConfig(**{**MOE.__dict__, "encoder_routing": routing, **changes})
    return MoEFeedForward(TINY.replace(moe=moe), "encoder", nnx.Rngs(0))


def run(layer, x, mask=None):
    mdef, params = split_params(layer)
    return jax.jit(lambda p, x, m: mdef.bind(p).forward(x, m))(params, x, mask)


def tokens(seed=1):
    return jax.random.normal(jax.random.key(seed), (B, S, TINY.d_model))


def ffn(layer, e, x):
    """Expert e on one token (gated-GELU), written out."""
    h = jax.nn.gelu(x @ layer.wi_0[...][e], approximate=True) * (x @ layer.wi_1[...][e])
    return np.asarray(h @ layer.wo[...][e])


def group_loop(layer, x, k, cap, group, valid=None, by_probability=False, experts=False):
    """(outputs, processed) routing the flattened batch in consecutive groups of `group`
    tokens; tokens with valid False are left out of their group entirely."""
    d = x.shape[-1]
    flat = np.asarray(x).reshape(-1, d)
    probs = np.asarray(jax.nn.softmax(flat @ layer.router[...], axis=-1))
    real = np.ones(len(flat), bool) if valid is None else np.asarray(valid).reshape(-1)
    out, processed = np.zeros_like(flat), np.zeros(len(flat), bool)
    for start in range(0, len(flat), group):
        members = [i for i in range(start, start + group) if real[i]]
        if experts:
            for e in range(E):
                ranked = sorted(members, key=lambda i: -probs[i, e])  # noqa: B023
                for i in ranked[:cap]:
                    out[i] += probs[i, e] * ffn(layer, e, flat[i])
                    processed[i] = True
            continue
        if by_probability:
            members = sorted(members, key=lambda i: -probs[i].max())
        filled = np.zeros(E, int)
        for choice in range(k):
            for i in members:
                e = np.argsort(-probs[i], kind="stable")[choice]
                filled[e] += 1
                if filled[e] <= cap:
                    out[i] += probs[i, e] * ffn(layer, e, flat[i])
                    processed[i] = True
    return out.reshape(x.shape), processed.reshape(x.shape[:2])


def test_number_of_groups():
    layer = make_layer()
    assert layer.num_groups(B, S) == 4                       # 64 tokens, groups of 16
    assert layer.num_groups(B, 1) == B                       # a decoding step: a row each
    assert make_layer(group_size=None).num_groups(B, S) == B  # HF: a sequence each
    assert make_layer(group_size=64).num_groups(B, S) == E   # never fewer groups than experts


def test_capacity_per_group_of_several_sequences():
    layer = make_layer(train_capacity_factor=1.25)
    xg = tokens().reshape(4, GROUP, -1)
    dispatch, *_ = layer.route(xg, deterministic=False)
    cap = round(1.25 * GROUP / E)                            # 5, where a sequence gives 2
    assert dispatch.shape == (4, GROUP, E, cap)
    per_expert = np.asarray(dispatch).sum(axis=(1, 3))       # [G, E] tokens kept
    assert per_expert.max() == cap and (per_expert <= cap).all()


@pytest.mark.parametrize("k,routing,bpr", [(1, "tokens_choose", False),
                                           (2, "tokens_choose", False),
                                           (1, "tokens_choose", True),
                                           (1, "experts_choose", False)])
def test_grouped_dispatch_equals_a_per_group_loop(k, routing, bpr):
    layer = make_layer(routing, num_selected_experts=k, eval_capacity_factor=1.0,
                       encoder_batch_prioritized_routing=bpr)
    cap = round(1.0 * GROUP / E)                             # 4: tight, so tokens drop
    x = tokens()
    y, aux = run(layer, x)
    want, processed = group_loop(layer, x, k, cap, GROUP, by_probability=bpr,
                                 experts=routing == "experts_choose")
    np.testing.assert_allclose(np.asarray(y), want, atol=1e-5)
    if routing == "tokens_choose":
        assert (~processed).any()
        assert abs(float(aux["dropped_fraction"]) - (~processed).mean()) < 1e-6
    assert aux["router_logits"].shape == (B, S, E)


def test_groups_follow_the_expert_replicas_and_the_batch_shards():
    """On data=2 each expert has 2 replicas, so (as flaxformer) the groups are a multiple of
    experts x replicas = 8: each device's 4 rows make 4 groups of 8 tokens."""
    layer = make_layer()
    mesh = partitioning.make_mesh(partitioning.MeshConfig(ici={"data": 2}),
                                  devices=jax.devices()[:2])
    rules = partitioning.rule_set("data_parallel")
    x = tokens()
    mdef, params = split_params(layer)
    with jax.set_mesh(mesh), activation_rules(partitioning.activation_resolver(rules, mesh)):
        assert layer.num_groups(B, S) == 8
        got = jax.jit(lambda p, x: mdef.bind(p).forward(x)[0])(params, x)
    cap = max(1, round(2.0 * 8 / E))                         # the eval factor, 8-token groups
    want, _ = group_loop(layer, x, 1, cap, 8)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


# Padding ----------------------------------------------------------------------------

def padding_mask():
    valid = np.ones((B, S), bool)
    valid[0, 3:] = valid[1, 6:] = valid[3, 2:] = False      # ragged rows
    return valid


def real_token_reference(layer, x, valid, k):
    """Router losses and metrics over the real tokens of each group, in numpy."""
    flat = np.asarray(x).reshape(-1, x.shape[-1])
    logits = flat @ np.asarray(layer.router[...])
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    real = valid.reshape(-1)
    balance = []
    for start in range(0, len(flat), GROUP):
        idx = [i for i in range(start, start + GROUP) if real[i]]
        top = np.argsort(-probs[idx], axis=-1, kind="stable")[:, :k]
        f = np.array([np.mean([e in row for row in top]) for e in range(E)])
        balance.append(E * np.sum(f * probs[idx].mean(0)))
    lse = np.log(np.exp(logits[real]).sum(-1))
    return float(np.mean(balance)), float(np.mean(lse ** 2))


@pytest.mark.parametrize("k", [1, 2])
def test_padding_takes_no_capacity_and_counts_in_no_loss(k):
    layer = make_layer(num_selected_experts=k, eval_capacity_factor=1.0)
    cap = round(1.0 * GROUP / E)
    x, valid = tokens(), padding_mask()
    y, aux = run(layer, x, valid)
    want, processed = group_loop(layer, x, k, cap, GROUP, valid=valid)
    np.testing.assert_allclose(np.asarray(y), want, atol=1e-5)
    assert np.all(np.asarray(y)[~valid] == 0.0)              # padding goes nowhere
    balance, z = real_token_reference(layer, x, valid, k)
    assert abs(float(aux["load_balancing_loss"]) - balance) < 1e-5
    assert abs(float(aux["router_z_loss"]) - z) < 1e-5
    dropped = (~processed[valid]).mean()
    assert abs(float(aux["dropped_fraction"]) - dropped) < 1e-6
    # routed as HF does, padding fills slots that real tokens then lose
    routed = make_layer(num_selected_experts=k, eval_capacity_factor=1.0,
                        ignore_padding_tokens=False)
    y_routed = np.asarray(run(routed, x, valid)[0])
    assert not np.allclose(y_routed[valid], np.asarray(y)[valid], atol=1e-5)


def test_model_threads_the_token_mask_to_every_moe_layer():
    """Encoder padding (id 0) and decoder padding leave the z-loss: the model's z-loss is the
    mean over real positions of its own router logits."""
    from tests.batches import padded_batch

    moe = MoEConfig(num_experts=E, encoder_sparse_step=1, decoder_sparse_step=1,
                    group_size=32, min_expert_capacity=1)
    cfg = TINY.replace(num_encoder_layers=1, num_decoder_layers=1, moe=moe)
    model = EncoderDecoder(cfg, rngs=nnx.Rngs(0))
    enc, dec, _ = padded_batch(TINY.vocab_size, batch=4, input_len=12, target_len=10)
    mdef, params = split_params(model)
    _, aux = jax.jit(lambda p, e, d: mdef.bind(p)(e, d, return_aux=True))(params, enc, dec)
    real = {"encoder": enc > 0, "decoder": (dec > 0) | (np.arange(dec.shape[1]) == 0)}
    for side, valid in real.items():
        logits = np.asarray(aux[f"{side}_router_logits"])   # [layers, B, S, E]
        lse = np.log(np.exp(logits).sum(-1))
        want = np.mean([np.mean(layer[valid] ** 2) for layer in lse])
        assert abs(float(aux[f"{side}_router_z_loss"]) - want) < 1e-5, side
        assert abs(float(aux[f"{side}_router_z_loss"]) - np.mean(lse ** 2)) > 1e-4, side


# Bad input ------------------------------------------------------------------------

def test_batch_prioritized_routing_is_the_encoders_alone():
    """flaxformer's t5x default: BPR in the encoder, position priority in the decoder (where
    ranking by probability would let later tokens decide which earlier ones drop)."""
    moe = MoEConfig(encoder_batch_prioritized_routing=True)
    cfg = TINY.replace(moe=moe)
    assert MoEFeedForward(cfg, "encoder", nnx.Rngs(0)).batch_prioritized
    assert not MoEFeedForward(cfg, "decoder", nnx.Rngs(0)).batch_prioritized


@pytest.mark.parametrize("value", [0, -4, 2.5, True, "4096"])
def test_bad_group_size(value):
    with pytest.raises(ValueError, match=rf"MoEConfig.group_size={value!r} is invalid: "
                                         r"expected an integer >= 1 \(.*None makes each "
                                         r"sequence a routing group\)"):
        MoEConfig(group_size=value)


def test_bad_ignore_padding_tokens():
    with pytest.raises(ValueError, match=r"ignore_padding_tokens='yes' is invalid: expected "
                                         r"a bool"):
        MoEConfig(ignore_padding_tokens="yes")
