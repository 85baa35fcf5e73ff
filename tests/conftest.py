"""Test setup: 8 fake CPU devices, float32 matmuls at full precision, no GPU for TF, and one
JAX compilation cache for the whole run (both workers and every CLI subprocess a test
starts), so a program many tests build (a tiny T5's train step on one mesh) compiles once."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ  # set by the controller for workers
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"t5pod-test-jax-cache-{os.getpid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def pytest_sessionfinish(session):
    """The run's compilation cache goes with it (the controller's, once workers are done)."""
    import shutil

    if _OWN_CACHE and not hasattr(session.config, "workerinput"):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
