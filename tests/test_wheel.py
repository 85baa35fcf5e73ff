"""The wheel ships the whole source tree: every package (sub-packages found, not listed here),
every file in them (tasks/data, tools/launch), every shipped gin file (as the data package
t5pod_gin/gin: a top-level gin/ would be the gin-config library's) and the LICENSE."""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_FILES = ("pyproject.toml", "setup.py", "README.md", "LICENSE")
SKIP_DIRS = ("__pycache__",)


def _packages() -> list[str]:
    """The top-level packages of the source tree: its folders with an __init__.py."""
    return sorted(d for d in os.listdir(ROOT) if d != "tests"
                  and os.path.isfile(os.path.join(ROOT, d, "__init__.py")))


def _files_under(top: str) -> list[str]:
    """Paths relative to ROOT of the files under `top`, caches and hidden files left out."""
    out = []
    for d, dirs, files in os.walk(os.path.join(ROOT, top)):
        dirs[:] = [x for x in dirs if x not in SKIP_DIRS and not x.startswith(".")]
        out += [os.path.relpath(os.path.join(d, f), ROOT) for f in files
                if not f.startswith(".") and not f.endswith((".pyc", "~"))]
    return sorted(out)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> set[str]:
    """The names in a wheel built by pip from a copy of the build's inputs (an in-tree build
    would reuse build/, which keeps files deleted since)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for top in _packages() + ["gin"]:
        shutil.copytree(os.path.join(ROOT, top), src / top,
                        ignore=shutil.ignore_patterns(*SKIP_DIRS, "*.pyc"))
    for name in BUILD_FILES:
        shutil.copy(os.path.join(ROOT, name), src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", "-w", str(tmp / "dist"), str(src)], check=True)
    [built] = os.listdir(tmp / "dist")
    with zipfile.ZipFile(tmp / "dist" / built) as z:
        return set(z.namelist())


def test_every_package_and_its_files_are_in_the_wheel(wheel):
    packages = _packages()
    assert {"fields", "model_zoo", "runner", "tasks", "tools", "training"} <= set(packages)
    expected = [f for top in packages for f in _files_under(top)]
    assert "tasks/data/demo_spm.model" in expected
    missing = sorted(set(expected) - wheel)
    missing_dirs = sorted({os.path.dirname(f) for f in missing if f.endswith(".py")})
    assert not missing, (f"not in the wheel: {missing[:20]} ({len(missing)}); packages: "
                         f"{missing_dirs}; data: add a glob to [tool.setuptools.package-data]")


def test_every_shipped_gin_file_is_in_the_wheel_as_t5pod_gin(wheel):
    gin_files = [f for f in _files_under("gin") if f.endswith(".gin")]
    assert "gin/runs/demo_pretrain.gin" in gin_files
    missing = sorted(f for f in gin_files if f"t5pod_gin/{f}" not in wheel)
    assert not missing, f"gin files not in the wheel: {missing}"
    assert not [n for n in wheel if n.startswith("gin/")], "a top-level gin/ shadows gin-config"


def test_the_wheel_carries_the_license(wheel):
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in wheel)
