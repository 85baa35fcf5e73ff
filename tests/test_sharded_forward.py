"""The same T5 forward on meshes 1, 8x1 (data) and 2x4 (data x tensor) gives the same logits."""

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

import partitioning
from model_zoo import EncoderDecoder, preset
from model_zoo.axes import activation_rules
from model_zoo.model_def import split_params
from tests.batches import padded_batch

CFG = preset("t5_1_1_tiny", vocab_size=128, dropout_rate=0.0)


@pytest.fixture(scope="module")
def reference():
    model = EncoderDecoder(CFG, rngs=nnx.Rngs(3))
    enc, dec, _ = padded_batch(CFG.vocab_size, batch=8, input_len=24, target_len=16)
    return model, enc, dec, np.asarray(model(enc, dec))


def sharded_logits(model, enc, dec, ici, rules_name):
    n = int(np.prod(list(ici.values())))
    mesh = partitioning.make_mesh(partitioning.MeshConfig(ici=ici), devices=jax.devices()[:n])
    rules = partitioning.rule_set(rules_name)
    mdef, params = split_params(model)
    shardings = partitioning.tree_shardings(mdef.logical_axes(), params, rules, mesh)
    params = jax.device_put(params, shardings)
    batch = partitioning.batch_sharding(rules, mesh)
    enc, dec = jax.device_put(enc, batch), jax.device_put(dec, batch)

    @jax.jit
    def forward(p, e, d):
        return mdef.bind(p)(e, d)

    with jax.set_mesh(mesh), activation_rules(partitioning.activation_resolver(rules, mesh)):
        out = forward(params, enc, dec)
    return out, params


@pytest.mark.parametrize("ici,rules_name", [
    ({"data": 1}, "data_parallel"),
    ({"data": 8}, "data_parallel"),
    ({"data": 2, "tensor": 4}, "tensor"),
])
def test_same_logits_on_every_mesh(reference, ici, rules_name):
    model, enc, dec, want = reference
    out, _ = sharded_logits(model, enc, dec, ici, rules_name)
    assert len(out.sharding.device_set) == int(np.prod(list(ici.values())))
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-5, rtol=0)


def test_tensor_rules_shard_heads_and_mlp(reference):
    model, enc, dec, _ = reference
    _, params = sharded_logits(model, enc, dec, {"data": 2, "tensor": 4}, "tensor")
    layer = params["encoder"]["layers"]["layer"]
    assert layer["attention"]["query"].sharding.spec == P(None, None, "tensor", None)
    assert layer["attention"]["out"].sharding.spec == P(None, "tensor", None, None)
    assert layer["mlp"]["wi_0"].sharding.spec == P(None, None, "tensor")
    assert layer["mlp"]["wo"].sharding.spec == P(None, "tensor", None)
    assert params["shared"].sharding.spec == P("tensor", None)
