"""tests/markers.py stays true: PARITY is exactly the files that import torch or
transformers (directly or through a tests/ helper), MULTIHOST exactly those that start a
multi-process JAX run, every name is an existing test file, and pyproject registers each
marker (with --strict-markers, a misspelt one fails collection)."""

import ast
import os
import tomllib

from tests.markers import MARKERS, MULTIHOST, PARITY

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
HF = {"torch", "transformers"}
# What starts JAX processes that join one run: the worker, or test_multihost's spawn().
MULTIHOST_MODULES = {"tests.multihost_worker", "tests.test_multihost"}


def _imports(name: str) -> set[str]:
    """Modules a tests/ file imports anywhere (function-level included), top names and
    tests.* names."""
    with open(os.path.join(TESTS, name)) as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _helper_file(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "tests" and len(parts) > 1 and os.path.isfile(
            os.path.join(TESTS, parts[1] + ".py")):
        return parts[1] + ".py"
    return None


def _imports_hf(name: str, seen=frozenset()) -> bool:
    """Whether `name` imports torch/transformers, or a tests/ module (helper or test file)
    that does."""
    mods = _imports(name)
    if {m.split(".")[0] for m in mods} & HF:
        return True
    helpers = {_helper_file(m) for m in mods} - {None, name} - set(seen)
    return any(_imports_hf(h, seen | {name}) for h in helpers)


TEST_FILES = sorted(f for f in os.listdir(TESTS) if f.startswith("test_") and f.endswith(".py"))


def test_every_name_is_a_test_file():
    for marker, files in MARKERS.items():
        assert files <= set(TEST_FILES), (marker, sorted(files - set(TEST_FILES)))


def test_parity_is_every_file_that_needs_torch_or_transformers():
    needs = {f for f in TEST_FILES if _imports_hf(f)}
    assert not needs - PARITY, f"add to tests/markers.py PARITY: {sorted(needs - PARITY)}"
    assert not PARITY - needs, f"no torch/transformers, drop from PARITY: {sorted(PARITY - needs)}"


def test_multihost_is_every_file_that_starts_a_multi_process_run():
    starts = {f for f in TEST_FILES if f != "test_markers.py"
              and (_imports(f) & MULTIHOST_MODULES or "jax.distributed.initialize" in
                   open(os.path.join(TESTS, f)).read())}
    assert not starts - MULTIHOST, f"add to MULTIHOST: {sorted(starts - MULTIHOST)}"
    assert not MULTIHOST - starts, f"starts no processes, drop: {sorted(MULTIHOST - starts)}"


def test_pyproject_registers_every_marker_strictly():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        options = tomllib.load(f)["tool"]["pytest"]["ini_options"]
    registered = {m.split(":")[0].strip() for m in options["markers"]}
    assert set(MARKERS) <= registered
    assert "--strict-markers" in options["addopts"]
