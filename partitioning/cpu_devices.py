"""Fake CPU devices: on a machine without accelerators, a mesh of N devices gets N CPU ones.

JAX fixes the CPU device count when its backends start, so this must run before any array
or device query; the CLIs call it as soon as the mesh is known. It changes nothing when the
user already chose (`XLA_FLAGS=--xla_force_host_platform_device_count=N`), and accelerator
backends ignore it.
"""

from __future__ import annotations

import os

from partitioning.mesh import CPU_DEVICES_FLAG as FLAG
from partitioning.mesh import MeshConfig
from partitioning.mesh_spec import devices_needed


def request_cpu_devices(config: MeshConfig) -> bool:
    """Ask JAX for as many CPU devices as `config` needs; False when too late or not needed."""
    import jax

    needed = devices_needed(config)
    if needed is None or needed <= 1 or FLAG in os.environ.get("XLA_FLAGS", ""):
        return False
    if any(d != 1 for d in config.dcn.values()):  # several processes: each has its own
        return False
    try:
        jax.config.update("jax_num_cpu_devices", max(needed, jax.config.jax_num_cpu_devices))
    except RuntimeError:  # backends already started: make_mesh's error says what to set
        return False
    return True
