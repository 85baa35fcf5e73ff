"""Test setup: 8 fake CPU devices, float32 matmuls at full precision, no GPU for TF, XLA's
CPU backend at LLVM -O0 with its loop emitters, and one JAX compilation cache for the whole
run (both workers and every CLI subprocess a test starts), so a program many tests build
compiles once."""

import os
import tempfile

# LLVM's optimisation level 0 and XLA:CPU's loop emitters instead of its MLIR fusion
# emitters: XLA's HLO passes are unchanged; the CPU code it emits runs slower, but the tests'
# tiny programs cost what they take to compile: a tiny T5's init and train step on 8
# devices compile in 3.3 s instead of 8.2 s (4.8 s with -O0 alone).
TEST_XLA_FLAGS = ("--xla_force_host_platform_device_count=8",
                  "--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")
_given = os.environ.get("XLA_FLAGS", "").split()  # a flag given there wins over the suite's
_named = {f.split("=")[0] for f in _given}
os.environ["XLA_FLAGS"] = " ".join(_given + [f for f in TEST_XLA_FLAGS
                                             if f.split("=")[0] not in _named])
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ  # set by the controller for workers
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"t5pod-test-jax-cache-{os.getpid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # noqa: E402

from tools.cli import setup_logging  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
setup_logging()  # the library's log lines on stderr, as the CLIs show them


def pytest_sessionfinish(session):
    """The run's compilation cache goes with it (the controller's, once workers are done)."""
    import shutil

    if _OWN_CACHE and not hasattr(session.config, "workerinput"):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Every test of a file in tests/markers.py's sets carries that set's marker."""
    import pytest

    from tests.markers import MARKERS

    for item in items:
        for name, files in MARKERS.items():
            if item.path.name in files:
                item.add_marker(getattr(pytest.mark, name))
