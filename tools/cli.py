"""The preamble every command line shares: a quiet start, t5pod's log lines on stderr, flags.

A CLI imports this module first: importing it sets the environment TensorFlow reads at its
import (tasks/tf_setup.py also hides TensorFlow's C++ start-up lines) and sends the library's
log lines (`logging.getLogger(__name__)` in every package) to stderr: warnings and progress,
while results (tables, the final JSON line) stay prints on stdout. `parse` splits off the
t5x-style gin flags (`--gin_file=F`, `--gin.NAME=VALUE`) before argparse reads the rest.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before anything imports TensorFlow

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

# t5pod's packages: their INFO lines are shown, as the message alone
PACKAGES = ("fields", "model_zoo", "partitioning", "training", "tasks", "runner", "inference",
            "experiments")
# other libraries' lines that are noise on every run of a CLI: seqio's advice on an uncached
# task, orbax on the read-only look at a model_dir's checkpoints before a run (resume checks)
NOISE = ("Using an uncached FunctionDataset for training is not recommended",
         "CheckpointManagerOptions.read_only=True, setting save_interval_steps=0",
         "Given directory is read only=")


class _Stderr(logging.StreamHandler):
    """A handler that writes to the sys.stderr of the moment (a test's capture swaps it)."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


class _Format(logging.Formatter):
    """t5pod's progress as the message alone; warnings and other libraries' lines named."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.name.split(".")[0] in PACKAGES:
            return text if record.levelno < logging.WARNING else f"warning: {text}"
        return f"{record.levelname}:{record.name}:{text}"


def _not_noise(record: logging.LogRecord) -> bool:
    return not any(n in str(record.msg) for n in NOISE)


def setup_logging(level: int = logging.INFO) -> None:
    """One stderr handler on the root logger (so absl adds none of its own; one it added
    already goes), t5pod's packages at `level`, other libraries at WARNING. Idempotent."""
    root = logging.getLogger()
    for h in list(root.handlers):  # absl's logging.basicConfig() on its first log line
        if type(h) is logging.StreamHandler and h.stream in (sys.stderr, sys.__stderr__):
            root.removeHandler(h)
    if not any(isinstance(h, _Stderr) for h in root.handlers):
        handler = _Stderr()
        handler.setFormatter(_Format())
        handler.addFilter(_not_noise)
        root.addHandler(handler)
    for name in PACKAGES:
        logging.getLogger(name).setLevel(level)


def parser(doc: str, distributed: bool = False) -> argparse.ArgumentParser:
    """An ArgumentParser described by the first line of `doc` (the CLI's module docstring),
    with the multi-host flags (tools/distributed_flags.py) when the CLI touches devices."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    if distributed:
        from tools.distributed_flags import add_distributed_flags

        add_distributed_flags(p)
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None = None, known: bool = False):
    """(args, gin files, gin bindings) from `argv` (default sys.argv[1:]); `known`: also the
    arguments argparse does not know, for the CLI to pass on (args, files, bindings, extra)."""
    from runner.gin_args import split_gin_args

    argv = sys.argv[1:] if argv is None else list(argv)
    files, bindings, rest = split_gin_args(argv)
    if known:
        args, extra = p.parse_known_args(rest)
        return args, files, bindings, extra
    return p.parse_args(rest), files, bindings


def show_report(path: str, heading: str = "") -> None:
    """Print a report a library function wrote (a markdown table) on stdout, the CLI's
    result; nothing when it was not written (members still missing)."""
    from fields import paths

    if paths.isfile(path):
        print(f"\n{heading}{paths.read_text(path).rstrip()}\n\n{path}")


setup_logging()
