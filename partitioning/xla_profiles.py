"""XLA flags and JAX environment for a platform, set by the launcher, not in library code.

`python -m tools.xla_flags gpu` prints a profile's `export` lines (no CLI here). Flags the
user already put in XLA_FLAGS win over the profile's value for the same flag; other
variables are only set where unset. Unknown flags
make XLA abort at start-up, so `tests/test_xla_flags.py` checks every profile against the
installed jaxlib (CPU builds parse the GPU flags too).
"""

from __future__ import annotations

import os
import subprocess
import sys

from fields.choices import require_choice

# Each flag's reason is beside it; all of them matter only where there are collectives to
# overlap (several GPUs), and cost nothing on one.
GPU_FLAGS = (
    # schedule async collectives to overlap with independent compute
    "--xla_gpu_enable_latency_hiding_scheduler=true",
    # collectives on their own high-priority stream, so compute kernels do not starve them
    "--xla_gpu_enable_highest_priority_async_stream=true",
    # scanned layers: unroll the while loop by 2 so layer i+1's weights are gathered while
    # layer i computes (FSDP)
    "--xla_gpu_enable_while_loop_double_buffering=true",
    # move a scanned layer's all-gather / reduce-scatter / all-reduce across iterations
    "--xla_gpu_enable_pipelined_all_gather=true",
    "--xla_gpu_enable_pipelined_reduce_scatter=true",
    "--xla_gpu_enable_pipelined_all_reduce=true",
    # fewer, larger NCCL calls for the per-parameter gradient and weight collectives
    "--xla_gpu_all_reduce_combine_threshold_bytes=134217728",
    "--xla_gpu_all_gather_combine_threshold_bytes=134217728",
    "--xla_gpu_reduce_scatter_combine_threshold_bytes=67108864",
)

PROFILES: dict[str, dict[str, str]] = {
    # a training job owns its GPUs: let JAX's allocator take 95% rather than 75%
    "gpu": {"XLA_FLAGS": " ".join(GPU_FLAGS), "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.95"},
    "none": {},
}


def _flag_name(flag: str) -> str:
    return flag.split("=", 1)[0]


def merge_flags(profile_flags: str, user_flags: str) -> str:
    """The profile's flags, then the user's; a flag the user set replaces the profile's."""
    user = user_flags.split()
    mine = {_flag_name(f) for f in user}
    return " ".join([f for f in profile_flags.split() if _flag_name(f) not in mine] + user)


def environment(profile: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """The variables to export for `profile`, given the current environment."""
    require_choice("", "profile", profile, PROFILES, meaning="the XLA profiles")
    env = os.environ if env is None else env
    out = {}
    for name, value in PROFILES[profile].items():
        if name == "XLA_FLAGS":
            out[name] = merge_flags(value, env.get(name, ""))
        elif name not in env:
            out[name] = value
    return out


def profile_of(xla_flags: str) -> str:
    """Which profile's flags a run had: a profile name, 'none' or 'custom'."""
    have = set(xla_flags.split())
    for name, env in PROFILES.items():
        if env.get("XLA_FLAGS") and set(env["XLA_FLAGS"].split()) <= have:
            return name
    return "custom" if any("force_host_platform" not in f for f in have) else "none"


def unknown_flags(flags: str) -> list[str]:
    """Flags in `flags` the installed jaxlib does not know (it aborts on the first ones)."""
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], env=env,
                         capture_output=True, text=True, timeout=300)
    lines = (out.stderr + out.stdout).splitlines()
    return [line.split("XLA_FLAGS:", 1)[1].strip() for line in lines
            if "Unknown flag" in line and "XLA_FLAGS:" in line]
