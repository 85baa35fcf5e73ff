"""Find what slows a train step in its HLO: fp32 matmuls, big upcasts, transposes, collectives.

    python -m tools.hlo_audit --preset t5_1_1_base --dtype bfloat16 --batch 64 \
        --inputs 512 --targets 128 --mesh data=1 [--attention cudnn] [--json audit.json]

Takes tools.bench's step flags. Two stages are read:
- emitted: the program t5pod hands XLA (backend independent). Here a matmul with an fp32
  operand under bf16/fp16 compute is a stray: it runs at a fraction of the bf16 rate.
- compiled: after XLA's passes on this backend. Collectives (all-gather, all-reduce,
  reduce-scatter, all-to-all, collective-permute) appear here, after SPMD partitioning;
  transposes, layout copies and fp32 upcasts are those written to memory (top-level ops and
  fusion outputs) as this backend's compiler left them: run it on the GPU for the GPU's (a
  CPU promotes bf16 arithmetic to fp32, so its compiled upcasts say little).
Each finding is credited to the line of t5pod code that made it and grouped by it; ops in a
scanned stack's loop body are counted once, though they run once per layer.
"""

from __future__ import annotations

import collections
import json
import sys

from tools import cli  # first: the quiet start and the log lines
from experiments.perf import train_step as bench_step, hlo_text
from experiments.perf.hlo_text import collectives

LOW_PRECISION = {"bfloat16": "bf16", "float16": "f16"}


def _is_matmul(op: hlo_text.Op) -> bool:
    return op.opcode in ("dot", "convolution") or (
        op.opcode == "custom-call" and "gemm" in op.attributes.split("custom_call_target=")[-1]
        .split(",")[0].lower())


def fp32_matmuls(ops, dtype: str) -> list:
    """Matmuls with an fp32 operand, when the compute dtype is bf16/fp16 (none in fp32)."""
    if dtype not in LOW_PRECISION:
        return []
    return [op for op in ops if _is_matmul(op) and any(a.dtype == "f32" for a in op.operands)]


def upcasts(ops, dtype: str, min_bytes: int) -> list:
    """Converts from the compute dtype to fp32 of at least min_bytes (norms, softmax, loss
    do this by design; a large one elsewhere is a stray fp32 copy)."""
    low = LOW_PRECISION.get(dtype)
    return [op for op in ops if op.opcode == "convert" and op.bytes >= min_bytes
            and op.materialized and any(a.dtype == "f32" for a in op.results)
            and any(a.dtype == low for a in op.operands)]


def transposes(ops, min_bytes: int) -> list:
    """Transposes, and copies (layout changes) of at least min_bytes, written to memory."""
    return [op for op in ops if op.opcode in ("transpose", "copy") and op.bytes >= min_bytes
            and op.materialized]


def summarize(found: list, top: int) -> dict:
    """Count and bytes, and the largest groups by (op, source line)."""
    groups = collections.defaultdict(list)
    for op in found:
        groups[(op.opcode, op.source)].append(op)
    rows = [{"op": opcode, "source": source, "count": len(g),
             "bytes": sum(o.bytes for o in g),
             "example": f"{g[0].results[0] if g[0].results else ''} <- "
                        f"{', '.join(map(str, g[0].operands))}"}
            for (opcode, source), g in groups.items()]
    rows.sort(key=lambda r: -r["bytes"])
    return {"count": len(found), "bytes": sum(o.bytes for o in found), "top": rows[:top]}


def audit(emitted: str, compiled: str, dtype: str, min_bytes: int = 1 << 20,
          top: int = 8) -> dict:
    """The findings of both stages' HLO text."""
    early, late = hlo_text.parse(emitted), hlo_text.parse(compiled)
    return {
        "emitted": {"fp32_matmuls": summarize(fp32_matmuls(early, dtype), top),
                    "upcasts": summarize(upcasts(early, dtype, min_bytes), top),
                    "transposes": summarize(transposes(early, min_bytes), top)},
        "compiled": {"collectives": summarize(collectives(late), top),
                     "transposes": summarize(transposes(late, min_bytes), top),
                     "upcasts": summarize(upcasts(late, dtype, min_bytes), top)},
    }


def audit_step(args, preset_name: str) -> dict:
    cfg, trainer, batch = bench_step.setup(args, preset_name, (args.moe_dispatch or [None])[0])
    lowered = trainer.lower_train_step({k: (v.shape, v.dtype) for k, v in batch.items()})
    compiled = lowered.compile()
    try:  # source lines need debug_info (jax >= 0.10); without it findings name no line
        emitted = lowered.as_text("hlo", debug_info=True)
    except TypeError:
        emitted = lowered.as_text("hlo")
    report = audit(emitted, compiled.as_text(), args.dtype, int(args.min_mib * (1 << 20)),
                   args.top)
    return {"model": preset_name, "dtype": args.dtype, "batch": args.batch,
            "inputs": args.inputs, "targets": args.targets, "mesh": args.mesh,
            "rules": args.rules, "attention": args.attention, "remat": args.remat,
            "vocab_chunk": args.vocab_chunk,
            "device_kind": trainer.mesh.devices.flat[0].device_kind, **report}


def _print(report: dict) -> None:
    print(f"# {report['model']} {report['dtype']} B{report['batch']} "
          f"{report['inputs']}/{report['targets']} mesh {report['mesh']} "
          f"on {report['device_kind']}")
    for stage in ("emitted", "compiled"):
        for kind, found in report[stage].items():
            print(f"{stage:8s} {kind:13s} {found['count']:5d} ops "
                  f"{found['bytes'] / 2**20:10.1f} MiB")
            for row in found["top"]:
                print(f"    {row['count']:4d} x {row['op']:18s} {row['bytes'] / 2**20:9.1f} MiB"
                      f"  {row['source'] or '?'}  {row['example']}")


def main(argv=None):
    p = cli.parser(__doc__)
    bench_step.add_step_flags(p)
    p.add_argument("--min_mib", type=float, default=1.0,
                   help="ignore upcasts and transposes smaller than this")
    p.add_argument("--top", type=int, default=8, help="largest groups listed per finding")
    p.add_argument("--json", help="also append the report as one JSON line to this file")
    args = p.parse_args(argv)
    for name in args.preset or ["t5_1_1_tiny"]:
        report = audit_step(args, name)
        _print(report)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(report) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
