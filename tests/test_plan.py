"""tools.plan: ahead-of-time plans on 8 (this process) and 64 (a re-executed one) fake devices."""

import json
import os
import subprocess
import sys

import pytest

from tools import plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--gin_file=models/t5_1_1/tiny.gin", "--batch=64", "--inputs=16", "--targets=4",
        "--rules=fsdp"]


def test_per_device_params_fall_as_fsdp_grows(tmp_path):
    on8 = plan.main(TINY + ["--mesh=fsdp=8"])
    out = tmp_path / "plan64.json"
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop(plan.CHILD_ENV, None)
    done = subprocess.run([sys.executable, "-m", "tools.plan", *TINY, "--mesh=fsdp=64",
                           f"--json={out}"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    on64 = json.load(open(out))
    assert on64["devices"] == 64 and on64["mesh"]["fsdp"] == 64
    assert "param shardings:" in done.stdout and "fits: tpu_v4_32GiB yes" in done.stdout
    total = on8["params"] * 4  # float32 bytes of the whole model
    sizes = [r["per_device_bytes"]["params"] for r in (on8, on64)]
    assert total / 4 > sizes[0] > sizes[1] and sizes[1] < sizes[0] / 2, (total, sizes)
    # FSDP gathers params for the matmuls and reduces gradients across the mesh.
    assert on8["collectives"].get("all-gather") and on64["collectives"].get("all-gather")
    spec = on8["param_shardings"]["['encoder']['layers']['layer']['mlp']['wi_0']"]["spec"]
    assert "fsdp" in spec
    for r in (on8, on64):
        b = r["per_device_bytes"]
        assert b["xla_temporaries"] > 0 and b["peak_estimate"] >= b["xla_arguments"]


def test_plan_refuses_replicated_params_and_a_mesh_beyond_the_devices():
    with pytest.raises(ValueError, match="stay replicated on mesh"):
        plan.main(TINY[:-1] + ["--rules=data_parallel", "--mesh=fsdp=8"])
    with pytest.raises(ValueError, match="needs 16 devices but only 8 are available"):
        plan.main(TINY + ["--mesh=fsdp=16"])
    with pytest.raises(SystemExit):
        plan.main(TINY + ["--mesh=fsdp=-1"])


def test_tpu_target_is_clear_when_unavailable():
    pytest.importorskip("jax")
    try:
        import libtpu  # noqa: F401
        pytest.skip("libtpu is installed: the TPU topology is available here")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="TPU topology tpu_v4:2x2x1 is unavailable.*libtpu"):
        plan.main(TINY + ["--mesh=fsdp=8", "--target=tpu_v4:2x2x1"])
