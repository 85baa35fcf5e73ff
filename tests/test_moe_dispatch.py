"""MoE dispatch by index and dropless against the einsum reference (outputs, router losses,
metrics, gradients), on one device and on an expert=4 x data=2 mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import partitioning
from model_zoo.axes import activation_rules
from model_zoo.config import MoEConfig
from model_zoo.model_def import split_params
from model_zoo.moe.moe_layer import MoEFeedForward
from tests.train_helpers import TINY
from experiments.perf import hlo_text

E, B, S = 4, 8, 8  # groups of 8 tokens: one per device on the 8-device mesh
MOE = MoEConfig(num_experts=E, min_expert_capacity=1, group_size=S, eval_capacity_factor=1.0)
ROUTINGS = {"top1": ("tokens_choose", {}),
            "top2": ("tokens_choose", {"num_selected_experts": 2}),
            "batch_prioritized": ("tokens_choose", {"encoder_batch_prioritized_routing": True}),
            "experts_choose": ("experts_choose", {})}


def make_layer(name, **changes):
    routing, extra = ROUTINGS[name]
    moe = MoEConfig(**{**MOE.__dict__, "encoder_routing": routing, **extra, **changes})
    return MoEFeedForward(TINY.replace(moe=moe), "encoder", nnx.Rngs(0))


def inputs():
    x = jax.random.normal(jax.random.key(1), (B, S, TINY.d_model))
    valid = np.ones((B, S), bool)
    valid[0, 3:] = valid[2, 6:] = valid[5, 1:] = False  # padding, ragged rows
    return x, valid


def evaluate(layer, mesh=None):
    """((objective, y, aux), grads wrt params and x), and the compiled HLO text; with
    `mesh`, sharded by the `expert` rules."""
    mdef, params = split_params(layer)
    x, valid = inputs()
    weights = jax.random.normal(jax.random.key(2), x.shape)

    def objective(p, x):
        y, aux = mdef.bind(p).forward(x, valid)
        aux = {k: v for k, v in aux.items() if k != "router_logits"}
        value = jnp.sum(y * weights) + aux["load_balancing_loss"] + aux["router_z_loss"]
        return value, (y, aux)

    fn = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)
    if mesh is None:
        compiled = jax.jit(fn).lower(params, x).compile()
        return jax.device_get(compiled(params, x)), compiled.as_text()
    rules = partitioning.rule_set("expert")
    with jax.set_mesh(mesh), activation_rules(partitioning.activation_resolver(rules, mesh)):
        shardings = partitioning.tree_shardings(mdef.logical_axes(), params, rules, mesh)
        batch = partitioning.batch_sharding(rules, mesh, ndim=3)
        compiled = jax.jit(fn, in_shardings=(shardings, batch)).lower(params, x).compile()
        out = compiled(jax.device_put(params, shardings), jax.device_put(x, batch))
    return jax.device_get(out), compiled.as_text()


def assert_same(got, want):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=0), got, want)


@pytest.fixture(scope="module")
def mesh():
    return partitioning.make_mesh(partitioning.MeshConfig(ici={"expert": 4, "data": 2}),
                                  devices=jax.devices()[:8])


@pytest.mark.parametrize("name", ROUTINGS)
def test_index_equals_einsum_with_drops_and_padding(name, mesh):
    want, _ = evaluate(make_layer(name))
    (_, (_, aux)), _ = want
    assert float(aux["dropped_fraction"]) > 0  # capacity 2 of 8 tokens per expert: drops
    assert_same(evaluate(make_layer(name, dispatch="index"))[0], want)
    got, hlo = evaluate(make_layer(name, dispatch="index"), mesh)
    assert_same(got, want)
    # tokens reach the experts' devices all-to-all; no device gathers the batch's tokens
    ops = hlo_text.collectives(hlo_text.parse(hlo))
    assert any(op.opcode.startswith("all-to-all") for op in ops)
    gathered = [op for op in ops if op.opcode.startswith("all-gather")]
    assert max((op.bytes for op in gathered), default=0) < 4 * B * S * TINY.d_model / 2


@pytest.mark.parametrize("name", ["top1", "top2"])
def test_dropless_equals_einsum_when_capacity_drops_nothing(name):
    ample = dict(eval_capacity_factor=float(E))  # capacity = S: every expert may take all
    want, _ = evaluate(make_layer(name, **ample))
    (_, (_, aux)), _ = want
    assert float(aux["dropped_fraction"]) == 0.0
    assert_same(evaluate(make_layer(name, dispatch="dropless", **ample))[0], want)


def test_dropless_refuses_expert_parallelism(mesh):
    layer = make_layer("top1", dispatch="dropless")
    mdef, params = split_params(layer)
    rules = partitioning.rule_set("expert")
    with jax.set_mesh(mesh), activation_rules(partitioning.activation_resolver(rules, mesh)):
        with pytest.raises(ValueError, match=r"dispatch='dropless' cannot run with the experts "
                                             r"sharded over the `expert` mesh axis.*'index'"):
            jax.eval_shape(lambda p, x: mdef.bind(p).forward(x)[0], params, inputs()[0])


@pytest.mark.parametrize("changes,match", [
    (dict(dispatch="gather"), r"dispatch='gather' is invalid: expected one of \('einsum', "
                              r"'index', 'dropless'\)"),
    (dict(dispatch="dropless", encoder_routing="experts_choose"),
     r"dispatch='dropless' has no expert capacity, so it cannot serve "
     r"encoder_routing='experts_choose'"),
    (dict(dispatch="dropless", encoder_batch_prioritized_routing=True),
     r"cannot serve encoder_batch_prioritized_routing=True"),
    (dict(dispatch="dropless", expert_capacity=3), r"cannot serve expert_capacity=3"),
])
def test_bad_dispatch(changes, match):
    with pytest.raises(ValueError, match=match):
        MoEConfig(**changes)


def test_moe_flops_reports_xla_flops_against_the_experts():
    from tools import moe_flops

    row = moe_flops.layer_flops("switch_tiny", 64, "index")
    assert (row["num_experts"], row["capacity"]) == (4, 20)  # ceil(1.25 * 64 / 4)
    # fwd + bwd (3x) of 2 FLOPs per multiply-add, E x C slots, d_model 64, d_ff 128, wi and wo
    assert row["experts_flops"] == 3 * 2 * 4 * 20 * 64 * 128 * 2
    assert row["ratio"] == pytest.approx(row["xla_flops"] / row["experts_flops"], abs=1e-3)
