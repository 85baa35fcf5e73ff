"""tools.hlo_audit: what a train step's HLO does that costs time, credited to source lines."""

import argparse
import inspect
import json

import jax
import jax.numpy as jnp
import pytest

from tools import bench, hlo_audit
from experiments.perf import hlo_text


def step_hlo(*flags, compile_step=True):
    """(emitted, compiled or None) HLO text of t5_1_1_tiny's train step, and its abstract
    train state."""
    p = argparse.ArgumentParser()
    bench.add_step_flags(p)
    args = p.parse_args(["--batch", "8", "--inputs", "32", "--targets", "16", *flags])
    _, trainer, batch = bench.setup(args, "t5_1_1_tiny")
    lowered = trainer.lower_train_step({k: (v.shape, v.dtype) for k, v in batch.items()})
    compiled = lowered.compile().as_text() if compile_step else None
    return lowered.as_text("hlo", debug_info=True), compiled, trainer.abstract_state()


def test_parser_credits_each_op_to_its_source_line():
    def f(x):
        y = x.astype(jnp.bfloat16).T
        return y.astype(jnp.float32)

    line = inspect.getsourcelines(f)[1]
    text = jax.jit(f).lower(jnp.ones((512, 1024))).as_text("hlo", debug_info=True)
    ops = hlo_text.parse(text)
    (t,) = hlo_audit.transposes(ops, min_bytes=1 << 20)
    assert (t.results[0].dtype, t.results[0].shape) == ("bf16", (1024, 512))
    assert t.source == f"test_hlo_audit.py:{line + 1}"
    (up,) = hlo_audit.upcasts(ops, "bfloat16", min_bytes=1 << 20)
    assert up.bytes == 2 << 20 and up.source == f"test_hlo_audit.py:{line + 2}"


def test_only_top_level_ops_and_fusion_outputs_count_as_written_to_memory():
    f = jax.jit(lambda x: jnp.tanh(x * 2.0 + 1.0).T @ x)
    ops = {op.opcode: op for op in hlo_text.parse(f.lower(jnp.ones((256, 512))).compile()
                                                   .as_text())}
    assert ops["multiply"].fused and not ops["multiply"].materialized  # inside the fusion
    assert ops["tanh"].fused and ops["tanh"].root and ops["tanh"].materialized  # its output
    assert not ops["fusion"].fused and ops["fusion"].materialized and ops["dot"].materialized


@pytest.mark.parametrize("vocab_chunk", ["0", "8"])
def test_bf16_train_step_runs_every_matmul_in_bf16(vocab_chunk):
    emitted, _, _ = step_hlo("--dtype", "bfloat16", "--vocab_chunk", vocab_chunk,
                             compile_step=False)
    ops = hlo_text.parse(emitted)
    assert hlo_audit.fp32_matmuls(ops, "bfloat16") == []
    # the matmuls are there, in bf16, with the fp32 logits/scores accumulation
    matmuls = [op for op in ops if op.opcode == "dot"]
    assert len(matmuls) > 20 and all(a.dtype == "bf16" for op in matmuls for a in op.operands)


def test_data_parallel_step_gathers_nothing_and_reduces_every_gradient(tmp_path):
    out = tmp_path / "audit.jsonl"
    hlo_audit.main(["--preset", "t5_1_1_tiny", "--dtype", "bfloat16", "--batch", "8",
                    "--inputs", "32", "--targets", "16", "--mesh", "data=8", "--top", "100",
                    "--json", str(out)])
    report = json.loads(out.read_text())
    found = report["compiled"]["collectives"]
    assert {row["op"].removesuffix("-start") for row in found["top"]} == {"all-reduce"}
    _, _, state = step_hlo("--dtype", "bfloat16", compile_step=False)
    assert found["bytes"] >= sum(4 * p.size for p in jax.tree.leaves(state.params))
    assert report["emitted"]["fp32_matmuls"]["count"] == 0


def test_fsdp_step_all_gathers_params_never_activations():
    _, compiled, state = step_hlo("--mesh", "fsdp=8", "--rules", "fsdp")
    # params, and Adafactor's per-layer statistics (v_row/v_col), are all that may move
    params = jax.tree.leaves(state.params) + jax.tree.leaves(state.opt_state)
    gathered = [op for op in hlo_audit.collectives(hlo_text.parse(compiled))
                if op.opcode.startswith("all-gather")]
    assert gathered
    # a param or statistic, or one layer of a scanned stack, in any order of its dims
    shapes = {tuple(sorted(p.shape)) for p in params} | {
        tuple(sorted(p.shape[1:])) for p in params}
    for op in gathered:
        for result in op.results:
            assert tuple(sorted(result.shape)) in shapes, (op.name, str(result), op.source)
