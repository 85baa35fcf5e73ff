"""Plan a train step for a target mesh: compile it ahead of time, never run it.

    python -m tools.plan --gin_file=models/t5_1_1/xxl.gin --mesh=fsdp=64,tensor=4 \
        --rules=fsdp_tensor --batch=256 --inputs=512 --targets=114 --dtype=bfloat16 \
        [--dcn=data=2] [--target=cpu | --target=tpu_v4:4x4x8] [--remat=full] [--json=OUT]

Params and optimizer state are abstract (jax.eval_shape), the batch is ShapeDtypeStructs,
so no weight is ever materialised. `--target=cpu` compiles for fake CPU devices (this
process re-executes itself with as many as the mesh needs); `--target=tpu_v4:AxBxC` compiles
for a TPU v4 topology through libtpu (`pip install 'jax[tpu]'`), where JAX offers one.
Reports per-device bytes of params, optimizer state and XLA's arguments/temporaries, every
param's sharding, the collectives in the step, whether it fits a TPU v4 chip (32 GiB HBM)
or an 80 GB GPU, and the sufficient-sharding verdict (a rule set leaving large params
replicated is refused). CPU figures come from the CPU compiler: a layout and sharding plan,
an estimate of GPU memory; TPU figures are XLA's TPU memory analysis.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import re
import sys

from tools import cli  # first: the quiet start and the log lines
from partitioning.mesh_spec import parse_degrees

HBM = {"tpu_v4_32GiB": 32 * 2**30, "gpu_80GB": 80 * 10**9}  # per chip / per GPU
CHILD_ENV = "T5POD_PLAN_DEVICES"


def needed_devices(ici: dict, dcn: dict) -> int:
    degrees = list(ici.values()) + list(dcn.values())
    if any(d < 1 for d in degrees):
        raise ValueError(f"--mesh/--dcn degrees {ici} {dcn} must be explicit positive ints "
                         "(a plan has no devices to fill -1 from)")
    return math.prod(degrees)


def target_devices(target: str, count: int):
    """`count` devices of the target: fake CPU ones, or a TPU v4 topology's."""
    import jax

    if target == "cpu":
        have = jax.devices()
        if len(have) < count:
            raise ValueError(f"the mesh needs {count} devices but only {len(have)} are "
                             f"available; run `python -m tools.plan` (it re-executes with "
                             f"{count} fake CPU devices) or use a smaller mesh")
        return have[:count]
    match = re.fullmatch(r"tpu_v4:(\d+)x(\d+)x(\d+)", target)
    if not match:
        raise ValueError(f"--target={target!r}; valid: cpu, tpu_v4:AxBxC (e.g. tpu_v4:4x4x8)")
    chips = math.prod(int(g) for g in match.groups())
    try:
        from jax.experimental import topologies

        topo = topologies.get_topology_desc(platform="tpu",
                                            topology_name=f"v4:{target.split(':')[1]}")
    except Exception as e:  # noqa: BLE001 - no libtpu, or a topology JAX does not offer
        raise RuntimeError(f"TPU topology {target} is unavailable here ({type(e).__name__}: "
                           f"{str(e)[:300]}). It needs libtpu: pip install 'jax[tpu]' at this "
                           "jax version; use --target=cpu for a fake-device plan.") from None
    devices = list(topo.devices)
    if len(devices) != count:
        raise ValueError(f"--target={target} ({chips} chips) offers {len(devices)} devices "
                         f"(TensorCores) but the mesh needs {count}; a v4-N slice has N cores")
    return devices


def devices_per_chip(devices) -> int:
    """TPU topologies compiled here expose each v4 TensorCore as a device (2 per chip)."""
    chips = {tuple(getattr(d, "coords", ())) for d in devices}
    return len(devices) // len(chips) if devices[0].platform == "tpu" and chips else 1


def _per_device_bytes(tree, shardings) -> int:
    import jax
    import numpy as np

    sizes = jax.tree.map(
        lambda x, s: math.prod(s.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize,
        tree, shardings)
    return int(sum(jax.tree.leaves(sizes)))


def collectives(hlo: str) -> dict[str, int]:
    """How many of each cross-device collective the compiled step runs (per HLO op)."""
    from experiments.perf import hlo_text

    return dict(collections.Counter(op.opcode.removesuffix("-start")
                                    for op in hlo_text.collectives(hlo_text.parse(hlo))))


def plan(args) -> dict:
    import jax

    import partitioning
    from model_zoo.flops import train_flops_per_step
    from runner.gin_flags import model_from_gin
    from training.optimizers import OptimizerConfig
    from training.trainer import TrainConfig, Trainer

    overrides = {k: v for k, v in (("dtype", args.dtype), ("remat_policy", args.remat)) if v}
    cfg = model_from_gin(args.gin_file, args.gin).replace(dropout_rate=0.0, **overrides)
    ici, dcn = parse_degrees(args.mesh, "--mesh"), parse_degrees(args.dcn, "--dcn")
    count = needed_devices(ici, dcn)
    devices = target_devices(args.target, count)
    if dcn:  # DCN degrees span slices; on one process lay them out as outer axes of one mesh
        ici = {a: ici.get(a, 1) * dcn.get(a, 1) for a in set(ici) | set(dcn)}
    mesh = partitioning.make_mesh(partitioning.MeshConfig(ici=ici), devices)
    train = TrainConfig(batch_size=args.batch, microbatches=args.microbatches, rules=args.rules,
                        optimizer=OptimizerConfig(name=args.optimizer), deterministic=True,
                        max_replicated_fraction=args.max_replicated_fraction)
    trainer = Trainer(cfg, train, mesh)
    abstract = trainer.abstract_state()
    shapes = {"encoder_input_tokens": ((args.batch, args.inputs), "int32"),
              "decoder_input_tokens": ((args.batch, args.targets), "int32"),
              "decoder_target_tokens": ((args.batch, args.targets), "int32"),
              "decoder_loss_weights": ((args.batch, args.targets), "float32")}
    compiled = trainer.compile_train_step(shapes)
    mem = compiled.memory_analysis()
    params_b = _per_device_bytes(abstract.params, trainer.state_shardings.params)
    opt_b = _per_device_bytes(abstract.opt_state, trainer.state_shardings.opt_state)
    arg_b, out_b = mem.argument_size_in_bytes, mem.output_size_in_bytes
    alias_b, temp_b = mem.alias_size_in_bytes, mem.temp_size_in_bytes
    peak = arg_b + out_b - alias_b + temp_b
    per_chip = devices_per_chip(devices)
    flat = jax.tree_util.tree_flatten_with_path(abstract.params)[0]
    specs = jax.tree.leaves(trainer.state_shardings.params)
    param_shardings = {jax.tree_util.keystr(p): {"shape": list(x.shape),
                                                 "spec": str(tuple(s.spec))}
                       for (p, x), s in zip(flat, specs, strict=True)}
    n_params = sum(math.prod(x.shape) for _, x in flat)
    return {
        "model": " ".join(args.gin_file), "gin": args.gin,
        "params": n_params, "dtype": cfg.dtype, "remat": cfg.remat_policy,
        "target": args.target, "device_kind": devices[0].device_kind, "devices": count,
        "mesh": partitioning.mesh_shape(mesh), "dcn": dcn, "rules": args.rules,
        "batch": args.batch, "inputs": args.inputs, "targets": args.targets,
        "microbatches": args.microbatches, "optimizer": args.optimizer,
        "per_device_bytes": {"params": params_b, "optimizer_state": opt_b,
                             "xla_arguments": arg_b, "xla_outputs": out_b,
                             "xla_aliased": alias_b, "xla_temporaries": temp_b,
                             "peak_estimate": peak},
        "devices_per_chip": per_chip,
        "fits": {name: peak * (per_chip if name.startswith("tpu") else 1) <= cap
                 for name, cap in HBM.items()},
        "replicated_param_fraction": round(trainer.replicated_fraction, 4),
        "sufficient_sharding": f"ok: {trainer.replicated_fraction:.1%} of param bytes replicated "
                               f"(limit {args.max_replicated_fraction:.0%})",
        "collectives": collectives(compiled.as_text()),
        "train_tflops_per_step": round(train_flops_per_step(cfg, args.batch, args.inputs,
                                                            args.targets) / 1e12, 2),
        "param_shardings": param_shardings,
    }


def gib(n: int) -> str:
    return f"{n / 2**30:9.3f} GiB" if n >= 2**30 else f"{n / 2**20:9.3f} MiB"


def render(report: dict) -> str:
    b = report["per_device_bytes"]
    lines = [f"plan: {report['params'] / 1e6:,.1f}M params, {report['dtype']}, remat "
             f"{report['remat']}, batch {report['batch']} x ({report['inputs']}+"
             f"{report['targets']}) tokens, {report['optimizer']}",
             f"target {report['target']} ({report['device_kind']}) x {report['devices']}, "
             f"mesh {report['mesh']} (dcn {report['dcn'] or '-'}), rules {report['rules']}",
             "per device:"]
    for key in ("params", "optimizer_state", "xla_arguments", "xla_outputs", "xla_aliased",
                "xla_temporaries", "peak_estimate"):
        lines.append(f"  {key:<16} {gib(b[key])}")
    if report["devices_per_chip"] > 1:
        lines.append(f"  ({report['devices_per_chip']} devices per chip: a chip holds "
                     f"{report['devices_per_chip']}x the above)")
    lines.append("fits: " + ", ".join(f"{k} {'yes' if v else 'NO'}"
                                      for k, v in report["fits"].items()))
    lines.append(f"sufficient sharding: {report['sufficient_sharding']}")
    lines.append("collectives: " + (", ".join(f"{k} x{v}" for k, v in
                                              report["collectives"].items()) or "none"))
    lines.append("param shardings:")
    for path, s in report["param_shardings"].items():
        lines.append(f"  {path:<60} {str(s['shape']):<22} {s['spec']}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = cli.parser(__doc__)
    # --gin_file=MODEL.gin (repeatable) and --gin.NAME=VALUE are taken as in tools.train.
    p.add_argument("--mesh", required=True, help="ICI degrees, e.g. fsdp=64,tensor=4")
    p.add_argument("--dcn", default="", help="DCN degrees across slices/hosts, e.g. data=2")
    p.add_argument("--rules", default="fsdp_tensor")
    p.add_argument("--target", default="cpu", help="cpu | tpu_v4:AxBxC")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--inputs", type=int, default=512)
    p.add_argument("--targets", type=int, default=114)
    p.add_argument("--microbatches", type=int, default=1)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--remat", help="remat policy (default: the model's)")
    p.add_argument("--optimizer", default="adafactor", choices=["adafactor", "adamw"])
    p.add_argument("--max_replicated_fraction", type=float, default=0.25)
    p.add_argument("--json", help="also write the report as JSON here")
    return p


def _reexec_with_devices(count: int, argv: list[str]) -> None:
    """Restart this command with `count` fake CPU devices (set before jax starts)."""
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                   os.environ.get("XLA_FLAGS", ""))
    env = dict(os.environ, JAX_PLATFORMS="cpu", **{CHILD_ENV: str(count)},
               XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={count}".strip())
    os.execve(sys.executable, [sys.executable, "-m", "tools.plan", *argv], env)


def main(argv=None, reexec: bool = False) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser()
    args, files, bindings = cli.parse(p, argv)  # gin only: no TensorFlow
    if not files:
        p.error("give the model as --gin_file=models/...gin")
    args.gin_file, args.gin = files, bindings
    try:
        count = needed_devices(parse_degrees(args.mesh, "--mesh"), parse_degrees(args.dcn, "--dcn"))
    except ValueError as e:
        p.error(str(e))
    if reexec and args.target == "cpu" and os.environ.get(CHILD_ENV) != str(count):
        _reexec_with_devices(count, argv)
    report = plan(args)
    print(render(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    try:
        main(reexec=True)
    except (ValueError, RuntimeError) as e:
        print(f"tools.plan: {e}", file=sys.stderr)
        sys.exit(2)
