"""Meshes written on a command line: `data=2,fsdp=-1` (AXIS=DEGREE pairs, -1 fills)."""

from __future__ import annotations

import math

from partitioning.mesh import AXES, MeshConfig


def parse_degrees(spec: str, flag: str = "--mesh") -> dict[str, int]:
    """{axis: degree} from `fsdp=64,tensor=4`; a clear error naming the flag otherwise."""
    out = {}
    for part in filter(None, spec.split(",")):
        axis, sep, degree = part.partition("=")
        if not sep or not degree.strip().lstrip("-").isdigit():
            raise ValueError(f"{flag}={spec!r}: give AXIS=DEGREE pairs, e.g. fsdp=64,tensor=4")
        if axis.strip() not in AXES:
            raise ValueError(f"{flag}={spec!r}: unknown axis {axis.strip()!r}; axes: {AXES}")
        out[axis.strip()] = int(degree)
    return out


def mesh_config(spec: str, dcn: str = "") -> MeshConfig:
    return MeshConfig(ici=parse_degrees(spec, "--mesh") or {"data": -1},
                      dcn=parse_degrees(dcn, "--dcn"))


def devices_needed(config: MeshConfig) -> int | None:
    """How many devices the mesh asks for, or None when a degree is -1 (it takes them all)."""
    degrees = list(config.ici.values()) + list(config.dcn.values())
    return None if -1 in degrees else math.prod(degrees)


def devices_for(config: MeshConfig):
    """The first devices_needed devices, or None (all of them) when a degree fills."""
    import jax

    needed = devices_needed(config)
    return None if needed is None else jax.devices()[:needed]
