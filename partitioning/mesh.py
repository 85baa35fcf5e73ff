"""Device meshes with the physical axes `data, fsdp, tensor, expert`.

Each axis has an ICI degree (within a slice/host) and a DCN degree (across slices/hosts);
-1 fills whatever devices remain (at most one -1 per level). Axes are `AxisType.Auto`,
so jit propagates shardings from in/out_shardings and constraint hints.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

AXES = ("data", "fsdp", "tensor", "expert")
CPU_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def cpu_devices_hint(needed: int) -> str:
    return (f"on CPU, start the process with XLA_FLAGS={CPU_DEVICES_FLAG}={needed} (set before "
            "JAX starts; the tools.* commands do this themselves from the mesh)")


def _degrees(name: str, given: dict[str, int]) -> dict[str, int]:
    unknown = set(given) - set(AXES)
    if unknown:
        raise ValueError(f"MeshConfig.{name} names unknown mesh axes {sorted(unknown)}; "
                         f"valid axes: {AXES}")
    out = {axis: int(given.get(axis, 1)) for axis in AXES}
    bad = {a: d for a, d in out.items() if d == 0 or d < -1}
    if bad:
        raise ValueError(f"MeshConfig.{name} has invalid degrees {bad}: use a positive int or -1")
    if sum(d == -1 for d in out.values()) > 1:
        raise ValueError(f"MeshConfig.{name}={given} has more than one -1 (fill) axis")
    return out


def _fill(name: str, degrees: dict[str, int], total: int) -> dict[str, int]:
    unit = "devices" if name == "ici" else "slices/hosts"
    known = math.prod(d for d in degrees.values() if d != -1)
    if -1 in degrees.values():
        if total % known:
            raise ValueError(f"MeshConfig.{name}={degrees}: fixed degrees multiply to {known}, "
                             f"which does not divide the {total} {unit} available")
        return {a: (total // known if d == -1 else d) for a, d in degrees.items()}
    if known != total:
        raise ValueError(f"MeshConfig.{name}={degrees} multiplies to {known} but there are "
                         f"{total} {unit}; make the degrees multiply to {total} or use -1")
    return degrees


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Per-axis ICI and DCN degrees; the default is pure data parallelism over all devices."""

    ici: dict = dataclasses.field(default_factory=lambda: {"data": -1})
    dcn: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        _degrees("ici", self.ici)
        _degrees("dcn", self.dcn)

    def shape(self, num_devices: int, num_slices: int = 1) -> dict[str, int]:
        """Resolved per-axis total degrees (ici x dcn) for this many devices and slices."""
        if num_devices % num_slices:
            raise ValueError(f"{num_devices} devices do not split into {num_slices} slices")
        dcn = _fill("dcn", _degrees("dcn", self.dcn), num_slices)
        ici = _fill("ici", _degrees("ici", self.ici), num_devices // num_slices)
        return {a: ici[a] * dcn[a] for a in AXES}


def _num_granules(devices) -> int:
    """TPU slices, or hosts (processes) on GPU/CPU: the units DCN degrees span."""
    if devices[0].platform == "tpu":
        return len({getattr(d, "slice_index", 0) for d in devices})
    return len({d.process_index for d in devices})


def make_mesh(config: MeshConfig, devices=None) -> Mesh:
    """A Mesh over `devices` (default: all) with Auto axis types.

    With DCN degrees and several slices/hosts, a hybrid device mesh lays each axis's DCN
    part across them; otherwise one device mesh of degree ici x dcn per axis.
    """
    devices = list(jax.devices() if devices is None else devices)
    dcn = _degrees("dcn", config.dcn)
    granules = _num_granules(devices)
    if granules > 1 and any(d != 1 for d in dcn.values()):
        dcn = _fill("dcn", dcn, granules)
        ici = _fill("ici", _degrees("ici", config.ici), len(devices) // granules)
        grid = mesh_utils.create_hybrid_device_mesh(
            [ici[a] for a in AXES], [dcn[a] for a in AXES], devices,
            process_is_granule=devices[0].platform != "tpu")
    else:
        fixed = math.prod(d for d in dcn.values() if d != -1)
        try:
            shape = config.shape(len(devices), fixed)
        except ValueError as e:
            if devices[0].platform != "cpu" or -1 in config.ici.values():
                raise
            raise ValueError(f"{e}; {cpu_devices_hint(math.prod(config.ici.values()) * fixed)}"
                             ) from None
        try:
            grid = mesh_utils.create_device_mesh([shape[a] for a in AXES], devices)
        except (ValueError, NotImplementedError, AssertionError):
            grid = np.asarray(devices).reshape([shape[a] for a in AXES])
    return Mesh(grid, AXES, axis_types=(AxisType.Auto,) * len(AXES))


def mesh_shape(mesh: Mesh) -> dict[str, int]:
    return dict(zip(mesh.axis_names, mesh.devices.shape, strict=False))
