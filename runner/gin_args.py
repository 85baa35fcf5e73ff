"""The t5x-style gin flags split off a command line: `--gin_file=F` (repeatable) and
`--gin.NAME=VALUE`. Imports nothing heavy, so a CLI's `--help` and flag errors come before
TensorFlow and the task registry load (runner/gin_flags.py parses what this returns).

VALUE is a gin literal (`3`, `'text'`, `{'inputs': 512}`, `@ref()`, `%MACRO`); a bare word
such as a task name is taken as a string, so no escaped quotes are needed.
"""

from __future__ import annotations

import ast


def split_gin_args(argv: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(gin files, gin bindings, remaining argv)."""
    files, bindings, rest = [], [], []
    it = iter(argv)
    for arg in it:
        if arg.startswith("--gin_file"):
            files.append(arg.split("=", 1)[1] if "=" in arg else next(it))
        elif arg.startswith("--gin."):
            name, sep, value = arg[len("--gin."):].partition("=")
            if not sep:
                raise ValueError(f"gin binding {arg!r} needs a value: --gin.{name}=VALUE")
            bindings.append(f"{name} = {as_gin_value(value)}")
        else:
            rest.append(arg)
    return files, bindings, rest


def as_gin_value(value: str) -> str:
    value = value.strip()
    if value[:1] in "@%" or value in ("True", "False", "None"):
        return value
    try:
        ast.literal_eval(value)
        return value
    except (ValueError, SyntaxError):
        return repr(value)
