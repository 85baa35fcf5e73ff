"""Path flags (`--model_dir`, `--out`, ...): `type=path_flag` refuses an empty value, which is
what an unset shell variable gives (`--model_dir=$DIR`), when the flags are parsed:
argparse prints "argument --model_dir: '' is empty ..." before anything is read or made."""

from __future__ import annotations

import argparse


def path_flag(value: str) -> str:
    """argparse `type` of a flag naming a file or directory: any non-empty string."""
    if not value.strip():
        raise argparse.ArgumentTypeError(
            f"{value!r} is empty (an unset shell variable?): give a file or directory path")
    return value
