"""The package list, the one part of the build pyproject.toml cannot say.

Every package is found in the source tree (a new sub-package ships without an edit here), and
the shipped gin configs are added: gin/ stays at the top of the tree, but cannot install as a
top-level `gin`, the gin-config library's name, so pyproject.toml's package-dir installs it as
the data package t5pod_gin.gin (site-packages/t5pod_gin/gin/). runner/gin_flags.py finds it by
import, in a wheel and in an editable install alike. tests/test_wheel.py checks the wheel.
"""

from setuptools import find_namespace_packages, setup

PACKAGES = ("fields", "model_zoo", "partitioning", "training", "tasks", "runner", "inference",
            "experiments", "tools")
GIN = "t5pod_gin.gin"  # gin/, as [tool.setuptools.package-dir] maps it
SKIP = ["__pycache__", "*.__pycache__"]

setup(packages=find_namespace_packages(include=[n for p in PACKAGES for n in (p, f"{p}.*")],
                                       exclude=SKIP)
      + [GIN] + [f"{GIN}.{p}" for p in find_namespace_packages(where="gin", exclude=SKIP)])
