"""tools.xla_flags: launcher-set XLA flags the installed jaxlib knows, users' flags winning."""

import os
import subprocess
import sys

import pytest

from partitioning import xla_profiles as xla_flags


@pytest.mark.parametrize("profile", sorted(xla_flags.PROFILES))
def test_every_profile_flag_is_known_to_the_installed_jaxlib(profile):
    flags = xla_flags.PROFILES[profile].get("XLA_FLAGS", "")
    assert xla_flags.unknown_flags(flags) == []


def test_an_unknown_flag_is_named():
    bad = "--xla_gpu_enable_made_up_thing=true"
    assert xla_flags.unknown_flags(f"{xla_flags.GPU_FLAGS[0]} {bad}") == [bad]


def test_users_flags_and_memory_fraction_win_over_the_profile():
    env = xla_flags.environment("gpu", {
        "XLA_FLAGS": "--xla_gpu_enable_latency_hiding_scheduler=false --xla_dump_to=/tmp/d",
        "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.5"})
    flags = env["XLA_FLAGS"].split()
    assert "--xla_gpu_enable_latency_hiding_scheduler=false" in flags
    assert "--xla_gpu_enable_latency_hiding_scheduler=true" not in flags
    assert "--xla_dump_to=/tmp/d" in flags and len(flags) == len(xla_flags.GPU_FLAGS) + 1
    assert "XLA_PYTHON_CLIENT_MEM_FRACTION" not in env  # left as the user set it
    assert xla_flags.profile_of(env["XLA_FLAGS"]) == "custom"
    assert xla_flags.profile_of(" ".join(xla_flags.GPU_FLAGS) + " --xla_dump_to=/x") == "gpu"
    with pytest.raises(ValueError, match=r"profile='tpu7' is invalid: expected one of "
                                         r"\(.*\) \(the XLA profiles\)"):
        xla_flags.environment("tpu7", {})


def test_launcher_eval_exports_the_profile():
    script = ('eval "$(' + sys.executable + ' -m tools.xla_flags gpu)"; '
              'echo "$XLA_FLAGS"; echo "$XLA_PYTHON_CLIENT_MEM_FRACTION"')
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "XLA_PYTHON_CLIENT_MEM_FRACTION")}
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                         check=True, timeout=120)
    flags, fraction = out.stdout.strip().splitlines()
    assert flags.split() == list(xla_flags.GPU_FLAGS) and fraction == "0.95"
