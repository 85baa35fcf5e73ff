"""Read XLA's HLO text: every instruction with its type, operands' types and source line.

Works on what `Lowered.as_text("hlo", debug_info=True)` (the program we emit) and
`Compiled.as_text()` (after XLA's passes, backend specific) print. Source lines come from the
module's FileNames / FileLocations / StackFrames tables: an instruction is credited to the
innermost frame in t5pod's own packages, so a finding points at the line to change.
"""

from __future__ import annotations

import dataclasses
import math
import re

DTYPE_BYTES = {"pred": 1, "s4": 1, "u4": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1,
               "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
               "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
OUR_PACKAGES = ("model_zoo/", "training/", "partitioning/", "tasks/", "runner/", "tools/")

_ARRAY = re.compile(r"\b([a-z]+\d*[a-z0-9]*)\[([\d,]*)\]")
_COMPUTATION = re.compile(r"^(ENTRY )?%?([\w.\-]+) .*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.*)$")
_TABLE_ROW = re.compile(r"^(\d+) (.*)$")


@dataclasses.dataclass(frozen=True)
class Array:
    dtype: str
    shape: tuple[int, ...]

    @property
    def bytes(self) -> int:
        return DTYPE_BYTES.get(self.dtype, 4) * math.prod(self.shape)

    def __str__(self):
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"


@dataclasses.dataclass(frozen=True)
class Op:
    name: str
    opcode: str
    results: tuple[Array, ...]  # one per tuple element
    operands: tuple[Array, ...]  # types of the operands that are values of this computation
    computation: str
    attributes: str
    source: str | None  # "model_zoo/t5.py:260" of the innermost t5pod frame
    root: bool = False  # the ROOT of its computation
    fused: bool = False  # inside a fusion's computation (not written to memory unless root)

    @property
    def materialized(self) -> bool:
        """Its result is written to device memory: a top-level op or a fusion's root."""
        return self.root or not self.fused

    @property
    def bytes(self) -> int:
        return sum(a.bytes for a in self.results)


def _split_type(rest: str) -> tuple[str, str]:
    """'(f32[2], s32[]) tuple(...)' -> ('(f32[2], s32[])', 'tuple(...)')."""
    if not rest.startswith("("):
        head, _, tail = rest.partition(" ")
        return head, tail
    depth = 0
    for i, ch in enumerate(rest):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return rest[:i + 1], rest[i + 1:].lstrip()
    return rest, ""


def _arrays(text: str) -> tuple[Array, ...]:
    return tuple(Array(d, tuple(int(x) for x in s.split(",") if x))
                 for d, s in _ARRAY.findall(text) if d in DTYPE_BYTES)


def _operand_text(call: str) -> tuple[str, str]:
    """'dot(a, b), lhs_contracting_dims={1}' -> ('a, b', 'lhs_contracting_dims={1}')."""
    depth = 0
    for i, ch in enumerate(call):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and ch == ")":
            return call[call.index("(") + 1:i], call[i + 1:].lstrip(", ")
    return call, ""


class SourceTable:
    """FileNames / FunctionNames / FileLocations / StackFrames -> 'path:line'."""

    def __init__(self, lines: list[str]):
        self.files, self.locations, self.frames = {}, {}, {}
        section = None
        for line in lines:
            if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
                section = line
                continue
            row = _TABLE_ROW.match(line)
            if row is None or section is None:
                section = section if not line.strip() else None
                continue
            key, value = int(row.group(1)), row.group(2)
            if section == "FileNames":
                self.files[key] = value.strip('"')
            elif section == "FileLocations":
                fields = dict(re.findall(r"(\w+)=(\d+)", value))
                self.locations[key] = (int(fields["file_name_id"]), int(fields["line"]))
            elif section == "StackFrames":
                fields = dict(re.findall(r"(\w+)=(\d+)", value))
                # the printed parent id is one more than the parent's id (0: none)
                self.frames[key] = (int(fields["file_location_id"]),
                                    int(fields.get("parent_frame_id", 1)) - 1)

    def source(self, frame_id: int) -> str | None:
        innermost, seen = None, set()
        while frame_id in self.frames and frame_id not in seen:
            seen.add(frame_id)
            location, parent = self.frames[frame_id]
            file_id, line = self.locations.get(location, (0, 0))
            path = self.files.get(file_id, "?")
            where = f"{_short(path)}:{line}"
            innermost = innermost or where
            if any(pkg in path for pkg in OUR_PACKAGES):
                return where
            frame_id = parent
        return innermost


def _short(path: str) -> str:
    for pkg in OUR_PACKAGES:
        if pkg in path:
            return pkg + path.split(pkg, 1)[1]
    return path.rsplit("/", 1)[-1]


def parse(text: str) -> list[Op]:
    """Every instruction of every computation in an HLO module's text."""
    lines = text.splitlines()
    sources = SourceTable(lines)
    ops, computation, types = [], None, {}
    for line in lines:
        if computation is None:
            head = _COMPUTATION.match(line)  # unindented "[ENTRY ]%name (params) -> type {"
            if head and not line.startswith("HloModule"):
                computation, types = head.group(2), {}
            continue
        if line.strip() == "}":
            computation = None
            continue
        inst = _INSTRUCTION.match(line)
        if not inst:
            continue
        name, rest = inst.groups()
        type_text, call = _split_type(rest)
        opcode = call.split("(", 1)[0]
        operand_text, attributes = _operand_text(call)
        results = _arrays(type_text)
        types[name] = results
        operands = tuple(t for ref in operand_text.split(",")
                         for t in types.get(ref.strip().lstrip("%").split(" ")[-1], ()))
        frame = re.search(r"stack_frame_id=(\d+)", attributes)
        source = sources.source(int(frame.group(1))) if frame else None
        if source is None:  # no stack frame: at least JAX's name of the op
            op_name = re.search(r'op_name="([^"]+)"', attributes)
            source = f"op {op_name.group(1)[-60:]}" if op_name else None
        ops.append(Op(name, opcode, results, operands, computation, attributes, source,
                      root=line.lstrip().startswith("ROOT ")))
    fusions = {callee for op in ops if op.opcode == "fusion"
               for callee in re.findall(r"calls=%?([\w.\-]+)", op.attributes)}
    return [dataclasses.replace(op, fused=True) if op.computation in fusions else op
            for op in ops]


COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")


def collectives(ops: list[Op]) -> list[Op]:
    """The cross-device collectives among `ops` (async `-start` halves included)."""
    return [op for op in ops if op.opcode.removesuffix("-start") in COLLECTIVES]
