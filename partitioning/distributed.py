"""Multi-host start-up: one call, before anything touches a device, on every process.

`initialize(DistributedConfig(...))` picks one of three ways and returns which it took:

- "explicit": `coordinator_address` given (any GPU/CPU cluster): the caller also gives
  `num_processes` and `process_id`, optionally `local_device_ids`.
- "cluster": no coordinator given, but the environment is a Cloud TPU VM (libtpu and a
  Google TPU PCI device, or GKE's TPU_WORKER_HOSTNAMES) or a SLURM step of several tasks;
  JAX's own cluster detection fills in everything.
- "single": none of the above: nothing is initialised (one process, all local devices).

A non-zero process first waits for the coordinator's port to accept connections, so an
address nobody listens on fails within `initialization_timeout` seconds with a message
naming it. `heartbeat_timeout` bounds how long the survivors of a dead process wait before
the coordination service stops them. On CPU, cross-process collectives use gloo.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
import socket
import time

import jax

from fields.choices import require_choice
from fields.integers import require_int

MODES = ("auto", "explicit", "cluster", "single")


def _parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"DistributedConfig.coordinator_address={address!r} must be HOST:PORT "
                         "with a port in 1..65535, e.g. 10.0.0.2:8476")
    return host.strip("[]"), int(port)


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    mode: str = "auto"                      # auto | explicit | cluster | single
    coordinator_address: str | None = None  # HOST:PORT of process 0
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None  # None: all local devices
    initialization_timeout: int = 300       # seconds to reach the coordinator / all peers
    heartbeat_timeout: int = 100            # seconds before a silent process counts as dead

    def __post_init__(self):
        require_choice("DistributedConfig", "mode", self.mode, MODES)
        for name in ("initialization_timeout", "heartbeat_timeout"):
            if getattr(self, name) < 1:
                raise ValueError(f"DistributedConfig.{name}={getattr(self, name)} must be >= 1 s")
        if self.local_device_ids is not None:
            ids = tuple(self.local_device_ids)
            if not ids or any(not isinstance(i, int) or i < 0 for i in ids):
                raise ValueError(f"DistributedConfig.local_device_ids={self.local_device_ids} "
                                 "must be a non-empty tuple of device ids >= 0")
            object.__setattr__(self, "local_device_ids", ids)
        explicit = self.mode == "explicit" or self.coordinator_address is not None
        if self.mode in ("cluster", "single") and self.coordinator_address is not None:
            raise ValueError(f"DistributedConfig.mode={self.mode!r} takes no coordinator_address "
                             f"(got {self.coordinator_address!r}); use mode='explicit' or 'auto'")
        if not explicit:
            given = {k: getattr(self, k) for k in ("num_processes", "process_id")
                     if getattr(self, k) is not None}
            if given and self.mode != "cluster":
                raise ValueError(f"DistributedConfig {given} needs a coordinator_address "
                                 "(HOST:PORT of process 0)")
            return
        if self.coordinator_address is None:
            raise ValueError("DistributedConfig.mode='explicit' needs coordinator_address "
                             "(HOST:PORT of process 0)")
        _parse_address(self.coordinator_address)
        n, i = self.num_processes, self.process_id
        require_int("DistributedConfig", "num_processes", n, 1,
                    meaning="needed when a coordinator_address is given")
        require_int("DistributedConfig", "process_id", i, 0, n - 1,
                    meaning=f"the valid ids for num_processes={n}")


def on_cloud_tpu_vm() -> bool:
    """libtpu importable and a Google TPU on the PCI bus, or a GKE TPU pod's env."""
    if os.environ.get("TPU_WORKER_HOSTNAMES"):
        return True
    if importlib.util.find_spec("libtpu") is None:
        return False
    for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(vendor) as f:
                if f.read().strip() == "0x1ae0":  # Google
                    return True
        except OSError:
            continue
    return False


def in_slurm_job_step() -> bool:
    """A SLURM step with several tasks (what JAX's SLURM detection reads)."""
    keys = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
            "SLURM_LOCALID")
    return all(k in os.environ for k in keys) and int(os.environ["SLURM_NTASKS"]) > 1


def resolve_mode(config: DistributedConfig) -> str:
    if config.mode != "auto":
        return config.mode
    if config.coordinator_address is not None:
        return "explicit"
    if on_cloud_tpu_vm() or in_slurm_job_step():
        return "cluster"
    return "single"


def wait_for_coordinator(address: str, timeout: float) -> None:
    """Return once HOST:PORT accepts a TCP connection; TimeoutError naming it otherwise."""
    host, port = _parse_address(address)
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=min(2.0, timeout)):
                return
        except OSError as e:
            last = e
            time.sleep(0.25)
    raise TimeoutError(f"could not reach the coordinator at {address} within {timeout:g} s "
                       f"(last error: {last}). Check that process 0 is running and that "
                       "--coordinator_address names its host and a free port reachable from here.")


def initialize(config: DistributedConfig) -> str:
    """Join the job as `config` says; returns the mode taken ('explicit', 'cluster', 'single')."""
    mode = resolve_mode(config)
    if mode == "single":
        return mode
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = dict(initialization_timeout=config.initialization_timeout,
                  heartbeat_timeout_seconds=config.heartbeat_timeout)
    if config.local_device_ids is not None:
        kwargs["local_device_ids"] = list(config.local_device_ids)
    for key in ("num_processes", "process_id"):
        if getattr(config, key) is not None:
            kwargs[key] = getattr(config, key)
    if mode == "explicit":
        if config.process_id != 0:
            wait_for_coordinator(config.coordinator_address, config.initialization_timeout)
        kwargs["coordinator_address"] = config.coordinator_address
    try:
        jax.distributed.initialize(**kwargs)
    except Exception as e:  # noqa: BLE001 - re-raised with the settings that failed
        raise RuntimeError(f"jax.distributed.initialize failed in mode {mode!r} with "
                           f"{kwargs}: {e}") from e
    return mode


def is_primary() -> bool:
    """Host 0: the one process that writes logs, summaries and config files."""
    return jax.process_index() == 0
