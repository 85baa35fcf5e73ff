"""The import graph, read from the source (ast, nothing imported): CLIs compose libraries,
never each other, and no package has an import circle."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("fields", "model_zoo", "partitioning", "training", "tasks", "inference", "runner",
            "experiments", "tools")
# DESIGN's arrows: tools -> experiments -> runner -> inference -> training -> {model_zoo,
# partitioning}; inference, runner, experiments -> tasks; every package -> fields (the
# config-field checks, which import nothing of t5pod). A package may import only those
# below it; NEVER is the complement.
ABOVE = {"fields": set(), "model_zoo": {"fields"}, "partitioning": {"fields"},
         "tasks": {"fields"},
         "training": {"model_zoo", "partitioning", "fields"},
         "inference": {"training", "model_zoo", "partitioning", "tasks", "fields"},
         "runner": {"inference", "training", "model_zoo", "partitioning", "tasks", "fields"},
         "experiments": {"runner", "inference", "training", "model_zoo", "partitioning", "tasks",
                         "fields"},
         "tools": set(PACKAGES) - {"tools"}}
NEVER = {p: set(PACKAGES) - ABOVE[p] - {p} for p in PACKAGES}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for package in PACKAGES:
        for d, _, files in os.walk(os.path.join(ROOT, package)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(d, f)
                    name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    with open(path) as fh:
                        out[name.removesuffix(".__init__")] = ast.parse(fh.read())
    return out


def _imports(tree: ast.Module, known) -> set[str]:
    """Our modules a module imports anywhere (function-level imports included)."""
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from pkg import module` depends on that module, not on pkg/__init__'s contents
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known
                     else node.module for a in node.names]
        found.update(n for n in names if n in known)
    return found


def _is_cli(tree: ast.Module) -> bool:
    return any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)


MODULES = _modules()
GRAPH = {m: _imports(t, MODULES) - {m} for m, t in MODULES.items()}


def test_no_cli_imports_another_cli():
    clis = {m for m, t in MODULES.items() if m.startswith("tools.") and _is_cli(t)}
    assert {"tools.train", "tools.sweep", "tools.plan", "tools.bench"} <= clis
    bad = {m: sorted(GRAPH[m] & clis) for m in MODULES if m.startswith("tools.")
           and GRAPH[m] & clis}
    assert not bad, f"tools modules importing CLIs: {bad}"


def test_packages_import_one_way():
    bad = {m: sorted(d for d in GRAPH[m] if d.split(".")[0] in NEVER.get(m.split(".")[0], ()))
           for m in MODULES}
    assert not {m: d for m, d in bad.items() if d}


def test_no_import_circle():
    # modules: depth-first search for a back edge
    state, cycles = {}, []

    def visit(m, path):
        state[m] = "open"
        for d in sorted(GRAPH[m]):
            if state.get(d) == "open":
                cycles.append(path[path.index(d):] + [d] if d in path else [m, d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])
    assert not cycles, f"import circles: {cycles}"
    # packages: the graph between them is one-way too
    between = {p: {d.split(".")[0] for m in GRAPH if m.split(".")[0] == p for d in GRAPH[m]}
               - {p} for p in PACKAGES}
    for p in PACKAGES:
        for d in between[p]:
            assert p not in between[d], f"packages {p} and {d} import each other"


def test_no_module_reads_gin_internals():
    """gin's private state (`gin.config._CONFIG` and friends) changes without notice."""
    bad = [m for m, t in MODULES.items() for n in ast.walk(t)
           if (isinstance(n, ast.Attribute) and n.attr.startswith("_")
               and ast.unparse(n.value) in ("gin.config", "gin"))
           or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "gin"
               and any(a.name.startswith("_") for a in n.names))]
    assert not bad, f"modules reading gin internals: {sorted(set(bad))}"


def _room(module: str) -> str:
    """A module's room inside its package: its sub-package, or the top-level module itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


# Families that a package's layers above them compose, never the other way round.
SUBPACKAGE_NEVER = {
    "tasks.pretraining": {"tasks.instruction_tuning", "tasks.benchmarks", "tasks.flan2022",
                          "tasks.cache", "tasks.feeding", "tasks.registry", "tasks.settings"},
    "tasks.instruction_tuning": {"tasks.benchmarks", "tasks.flan2022", "tasks.cache",
                                 "tasks.feeding", "tasks.registry", "tasks.settings"},
    "tasks.benchmarks": {"tasks.flan2022", "tasks.cache", "tasks.feeding", "tasks.registry",
                         "tasks.settings"},
    "tasks.flan2022": {"tasks.pretraining", "tasks.instruction_tuning", "tasks.benchmarks",
                       "tasks.cache", "tasks.feeding", "tasks.registry", "tasks.settings"},
    "tasks.cache": {"tasks.feeding"},
    "model_zoo.moe": {"model_zoo.interop", "model_zoo.t5", "model_zoo.tree"},
    "experiments.perf": {"experiments.sweep_run", "experiments.study_run",
                         "experiments.studies", "experiments.wikispell_gap"},
}


def test_rooms_inside_a_package_import_one_way():
    # sub-packages and top-level modules as one node each: no circle between them
    rooms: dict[str, set[str]] = {}
    for m, deps in GRAPH.items():
        rooms.setdefault(_room(m), set()).update(
            _room(d) for d in deps if d.split(".")[0] == m.split(".")[0] and _room(d) != _room(m))

    def reaches(start, goal):
        seen, todo = set(), [start]
        while todo:
            for nxt in rooms.get(todo.pop(), ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    circles = sorted(r for r in rooms if reaches(r, r))
    assert not circles, f"rooms in an import circle: {circles}"
    assert set(SUBPACKAGE_NEVER) <= set(rooms), "a sub-package named here no longer exists"
    bad = {r: sorted(rooms[r] & never) for r, never in SUBPACKAGE_NEVER.items()
           if rooms[r] & never}
    assert not bad, f"families importing what composes them: {bad}"


# tools/ holds command lines and the preamble they share, nothing a library would import
PREAMBLE = {"tools.path_flags", "tools.distributed_flags", "tools.cli"}


def test_tools_holds_only_command_lines():
    modules = {m for m in MODULES if m.startswith("tools.")}
    not_cli = sorted(m for m in modules - PREAMBLE if not _is_cli(MODULES[m]))
    assert not not_cli, f"tools modules that are not command lines: {not_cli}"
    assert PREAMBLE <= modules
    bad = {m: sorted(d for d in GRAPH[m] if d.startswith("tools."))
           for m in MODULES if not m.startswith("tools.")}
    assert not {m: d for m, d in bad.items() if d}, "a library imports tools"
