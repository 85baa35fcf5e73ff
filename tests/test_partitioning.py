"""The rule resolver, mesh construction and the up-front errors of a partitioned run."""

import jax
import pytest
from jax.sharding import PartitionSpec as P

import partitioning
from partitioning import MeshConfig, make_mesh, resolve
from partitioning.rules import in_use_rules
from tests.train_helpers import TINY, make_trainer
from training.trainer import TrainConfig, check_precision_platform

MS = {"data": 2, "fsdp": 4, "tensor": 1, "expert": 1}


def test_first_match_wins_with_ordered_fallbacks():
    rules = (("embed", "tensor"), ("embed", "fsdp"), ("embed", None), ("mlp", "fsdp"))
    # tensor has size 1: dropped, so the next rule for embed applies
    assert resolve(("embed", "mlp"), rules, MS) == P("fsdp", None)
    # fsdp already used by the first dim: mlp falls through to replicated
    assert resolve(("mlp", "embed"), rules, MS) == P("fsdp", None)


def test_an_axis_is_never_used_twice():
    rules = (("a", "fsdp"), ("b", "fsdp"), ("b", "data"))
    assert resolve(("a", "b"), rules, MS) == P("fsdp", "data")


def test_indivisible_dims_fall_back():
    rules = (("heads", "fsdp"), ("heads", "data"), ("heads", None))
    assert resolve(("heads",), rules, MS, shape=(6,)) == P("data")
    assert resolve(("heads",), rules, MS, shape=(3,)) == P(None)


def test_multi_axis_targets_and_size_one_axes_dropped():
    rules = (("batch", ("data", "fsdp", "expert")),)
    assert resolve(("batch",), rules, MS) == P(("data", "fsdp"))


def test_a_weight_in_use_is_gathered_over_fsdp_and_keeps_its_tensor_shards():
    ms = {"data": 1, "fsdp": 4, "tensor": 2, "expert": 1}
    for name, want in (("fsdp", P(None, None)), ("fsdp_tensor", P("tensor", None)),
                       ("tensor", P("tensor", None))):
        rules = partitioning.rule_set(name)
        assert resolve(("vocab", "embed"), in_use_rules(rules), ms) == want, name
    # stored, the same table is sharded over fsdp
    assert resolve(("vocab", "embed"), partitioning.rule_set("fsdp_tensor"), ms) == P(
        "tensor", "fsdp")


def test_unknown_logical_names_are_reported():
    with pytest.raises(ValueError, match=r"\['mystery'\] have no rule"):
        resolve(("mystery", "embed"), (("embed", None),), MS)


def test_rule_naming_missing_mesh_axis():
    with pytest.raises(ValueError, match=r"names mesh axes \['pipeline'\] that do not exist"):
        partitioning.validate_rules((("batch", "pipeline"),))
    with pytest.raises(ValueError, match="pipeline"):
        make_trainer(rules=(("batch", "pipeline"),))


def test_mesh_fill_and_degrees():
    mesh = make_mesh(MeshConfig(ici={"data": 2, "tensor": -1}))
    assert partitioning.mesh_shape(mesh) == {"data": 2, "fsdp": 1, "tensor": 4, "expert": 1}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


@pytest.mark.parametrize("ici,match", [
    ({"data": 3}, "multiplies to 3 but there are 8 devices"),
    ({"data": -1, "fsdp": -1}, "more than one -1"),
    ({"data": 3, "fsdp": -1}, "does not divide the 8 devices"),
    ({"model": 8}, "unknown mesh axes"),
])
def test_bad_mesh_degrees(ici, match):
    with pytest.raises(ValueError, match=match):
        make_mesh(MeshConfig(ici=ici))


def test_batch_not_divisible_by_data_parallel_degree():
    with pytest.raises(ValueError, match="is not divisible by the data-parallel degree 8"):
        make_trainer({"data": 8}, batch_size=4)


def test_microbatches_must_divide_batch():
    with pytest.raises(ValueError, match="microbatches=3 must divide batch_size=8"):
        TrainConfig(batch_size=8, microbatches=3)


def test_fp16_on_tpu_is_refused():
    with pytest.raises(ValueError, match="float16.*not supported on TPU.*bfloat16"):
        check_precision_platform("float16", "tpu")
    check_precision_platform("float16", "gpu")
    check_precision_platform("bfloat16", "tpu")


def test_cudnn_attention_off_gpu_is_refused_before_compiling():
    with pytest.raises(ValueError, match="attention_impl='cudnn' needs NVIDIA GPUs.*'cpu'"):
        make_trainer(model_cfg=TINY.replace(attention_impl="cudnn"))


def test_replicated_params_on_a_model_parallel_mesh_are_refused():
    with pytest.raises(ValueError, match="stay replicated.*largest replicated params"):
        make_trainer({"fsdp": 8}, rules="data_parallel")
    assert TINY.d_model % 8 == 0  # so the fsdp rules do shard it
    assert make_trainer({"fsdp": 8}, rules="fsdp").replicated_fraction < 0.25
