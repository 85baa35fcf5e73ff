"""MoE layers: dispatch against a per-expert loop, capacity drops, expert parallelism, bad input."""

import jax
import numpy as np
import pytest
from flax import nnx

from model_zoo import EncoderDecoder
from model_zoo.config import MoEConfig
from model_zoo.model_def import split_params
from model_zoo.moe.moe_layer import MoEFeedForward
from tests.train_helpers import TINY, copy_batch, make_trainer

E, G, S = 4, 3, 8
MOE = MoEConfig(num_experts=E, min_expert_capacity=1, init_scale=1.0)
CFG = TINY.replace(moe=MOE)


def make_layer(routing="tokens_choose", **changes):
    cfg = CFG.replace(moe=MoEConfig(**{**MOE.__dict__, "encoder_routing": routing, **changes}))
    return MoEFeedForward(cfg, "encoder", nnx.Rngs(0))


def run(layer, x):
    """layer.forward(x), jitted (one compile instead of many eager ops)."""
    mdef, params = split_params(layer)
    return jax.jit(lambda p, x: mdef.bind(p).forward(x))(params, x)


def tokens():
    return jax.random.normal(jax.random.key(1), (G, S, CFG.d_model))


def expert_ffn(layer, e, x):
    """Expert e on one token, written out (gated-GELU)."""
    h = jax.nn.gelu(x @ layer.wi_0[...][e], approximate=True) * (x @ layer.wi_1[...][e])
    return h @ layer.wo[...][e]


def loop_reference(layer, x, k, capacity=None, by_probability=False, experts_choose=False):
    """Route token by token in Python: the rule written out, not vectorised."""
    probs = np.asarray(jax.nn.softmax(x @ layer.router[...], axis=-1))
    out = np.zeros(x.shape, np.float32)
    processed = np.zeros(x.shape[:2], bool)
    for g in range(x.shape[0]):
        if experts_choose:
            for e in range(E):
                for s in np.argsort(-probs[g, :, e], kind="stable")[:capacity]:
                    out[g, s] += probs[g, s, e] * np.asarray(expert_ffn(layer, e, x[g, s]))
                    processed[g, s] = True
            continue
        order = (np.argsort(-probs[g].max(-1), kind="stable") if by_probability
                 else np.arange(x.shape[1]))
        filled = np.zeros(E, int)
        for choice in range(k):             # all first choices before any second choice
            for s in order:
                e = np.argsort(-probs[g, s], kind="stable")[choice]
                filled[e] += 1
                if capacity is None or filled[e] <= capacity:
                    out[g, s] += probs[g, s, e] * np.asarray(expert_ffn(layer, e, x[g, s]))
                    processed[g, s] = True
    return out, processed


@pytest.mark.parametrize("k,routing", [(1, "tokens_choose"), (2, "tokens_choose"),
                                       (1, "experts_choose")])
def test_dispatch_and_combine_equal_a_per_expert_loop_with_ample_capacity(k, routing):
    layer = make_layer(routing, num_selected_experts=k, eval_capacity_factor=float(E))
    x = tokens()
    y, aux = run(layer, x)
    cap = S if routing == "experts_choose" else None   # ample: every expert may take all
    want, processed = loop_reference(layer, x, k, cap, experts_choose=routing != "tokens_choose")
    np.testing.assert_allclose(np.asarray(y), want, atol=1e-5)
    if routing == "tokens_choose":
        assert processed.all() and float(aux["dropped_fraction"]) == 0.0


@pytest.mark.parametrize("k,bpr", [(1, False), (2, False), (1, True)])
def test_tight_capacity_drops_exactly_the_overflow(k, bpr):
    layer = make_layer(num_selected_experts=k, expert_capacity=2,
                       encoder_batch_prioritized_routing=bpr)
    x = tokens()
    y, aux = run(layer, x)
    want, processed = loop_reference(layer, x, k, capacity=2, by_probability=bpr)
    np.testing.assert_allclose(np.asarray(y), want, atol=1e-5)
    assert (~processed).any()  # the rule dropped some: they add exactly 0 to the residual
    assert np.all(np.asarray(y)[~processed] == 0.0)
    assert abs(float(aux["dropped_fraction"]) - (~processed).mean()) < 1e-6
    if k == 1:  # no expert holds more than capacity x groups of the kept tokens
        assert float(aux["expert_load_max"]) <= E * 2 * G / processed.sum() + 1e-6


# Expert parallelism ---------------------------------------------------------------

EP = TINY.replace(moe=MoEConfig(num_experts=E, num_selected_experts=2, train_capacity_factor=1.0,
                                min_expert_capacity=1, encoder_sparse_step=1,
                                decoder_sparse_step=1))


def loss_and_grads(trainer, params, batch):
    """The train step's objective (cross entropy + router losses), its grads and aux."""
    from training.step import LossConfig, _forward_sums

    def objective(p, b):
        sums, aux = _forward_sums(trainer.model_def, p, b, LossConfig(), rng=None,
                                  deterministic=False)
        return sums.loss / sums.weight + aux["loss"], aux

    with trainer._context():
        fn = jax.jit(jax.value_and_grad(objective, has_aux=True),
                     in_shardings=(trainer.state_shardings.params, trainer.batch_sharding))
        params = jax.device_put(params, trainer.state_shardings.params)
        return jax.device_get(fn(params, trainer.shard_batch(batch)))


@pytest.fixture(scope="module")
def meshes():
    """(trainer, ((loss, aux), grads)) on 1 device and on expert=4 x data=2, same params."""
    params = split_params(EncoderDecoder(EP, rngs=nnx.Rngs(0)))[1]
    out = []
    for ici, rules in (({"data": 1}, "data_parallel"), ({"expert": 4, "data": 2}, "expert")):
        trainer = make_trainer(ici, rules, model_cfg=EP, max_replicated_fraction=1.0)
        out.append((trainer, loss_and_grads(trainer, params, copy_batch(8))))
    return out


def test_expert_x_data_mesh_gives_the_same_loss_and_grads(meshes):
    (_, ((loss_1, aux_1), grads_1)), (parallel, ((loss_8, aux_8), grads_8)) = meshes
    wi = parallel.state_shardings.params["encoder"]["layers"]["blocks"]["layer"]["layer_0"]
    assert wi["mlp"]["wi_0"].spec[1] == "expert"  # [blocks, expert, embed, mlp]
    assert abs(loss_1 - loss_8) < 1e-5 and abs(aux_1["loss"] - aux_8["loss"]) < 1e-6
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), grads_1, grads_8)
    for side in ("encoder", "decoder"):
        router = grads_1[side]["layers"]["blocks"]["layer"]["layer_0"]["mlp"]["router"]
        assert (np.abs(router).max(axis=(1, 2)) > 0).all()  # every MoE layer's router


def test_router_losses_and_metrics_reach_the_train_step(meshes):
    from training.step import make_train_step

    trainer, ((_, aux), _) = meshes[1]
    want = 0.01 * float(aux["load_balancing_loss"]) + 0.001 * float(aux["router_z_loss"])
    assert abs(float(aux["loss"]) - want) < 1e-6 and want > 0
    step = make_train_step(trainer.model_def, trainer.optimizer, trainer.schedule,
                           trainer.config.loss, trainer.loss_scale)
    state = trainer.abstract_state()
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in copy_batch(8).items()}
    metrics = jax.eval_shape(step, state, batch)[1]  # traced, not compiled
    for key in ("aux_loss", "load_balancing_loss", "router_z_loss",
                "encoder_layer0_dropped_fraction", "encoder_layer1_expert_load_max",
                "decoder_layer1_expert_load_min", "decoder_layer1_expert_load_entropy",
                "decoder_layer1_router_z_loss", "encoder_load_balancing_loss"):
        assert key in metrics and np.isfinite(float(aux[key.replace("aux_", "")])), key


# Bad input ------------------------------------------------------------------------

def test_experts_not_divisible_by_the_expert_axis():
    cfg = TINY.replace(moe=MoEConfig(num_experts=6))
    with pytest.raises(ValueError, match=r"num_experts=6 is not divisible by the size 4"):
        make_trainer({"expert": 4, "data": 2}, "expert", model_cfg=cfg,
                     max_replicated_fraction=1.0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_experts=4, num_selected_experts=5),
     r"num_selected_experts=5 is invalid: expected an integer in \[1, 4\] \(at most num_experts\)"),
    (dict(train_capacity_factor=0.0),
     r"train_capacity_factor=0.0 is invalid: expected a float > 0"),
    (dict(eval_capacity_factor=-1.0), r"eval_capacity_factor=-1.0 is invalid"),
    (dict(decoder_routing="experts_choose"), "encoder-only"),
    (dict(encoder_routing="random"), r"encoder_routing='random' is invalid: expected one of"),
    (dict(num_experts=0), r"num_experts=0 is invalid"),
])
def test_bad_moe_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MoEConfig(**kwargs)


def test_layers_must_fill_whole_sparse_blocks():
    with pytest.raises(ValueError, match=r"num_encoder_layers=3 is invalid: expected a multiple "
                                         r"of moe.encoder_sparse_step=2"):
        TINY.replace(num_encoder_layers=3, moe=MoEConfig())


def test_flops_count_top_k_experts_and_the_router():
    from model_zoo import preset
    from model_zoo.flops import forward_flops_per_example as flops

    base, switch = preset("t5_1_0_base"), preset("switch_base_8")
    router = 2 * 768 * 8 * (512 * 6 + 114 * 6)  # 6 MoE layers per stack, d_model x experts
    assert flops(switch, 512, 114) == flops(base, 512, 114) + router
    top2 = switch.replace(moe=MoEConfig(num_experts=8, num_selected_experts=2))
    mlp = 2 * 768 * 3072 * 2 * (512 * 6 + 114 * 6)  # one more expert MLP per token
    assert flops(top2, 512, 114) == flops(switch, 512, 114) + mlp
