"""Path flags (`--model_dir`, `--out`, ...): `type=path_flag` checks a value through the one
path layer (fields/paths.py) when the flags are parsed, so argparse names the flag:
"argument --model_dir: '' is empty ..." for an unset shell variable, an unknown scheme or a
malformed bucket URL likewise, before anything is read or made. Local paths come back
absolute, gs:// and s3:// URLs as given."""

from __future__ import annotations

import argparse

from fields.paths import BadPath, is_bucket, user_path


def path_flag(value: str) -> str:
    """argparse `type` of a flag naming a file or directory."""
    try:
        return user_path(value, "")
    except BadPath as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def local_path_flag(value: str) -> str:
    """argparse `type` of an output written to a local disk only (reports, plots, launch
    scripts): a bucket URL is refused here rather than becoming a local `gs:` directory."""
    path = path_flag(value)
    if is_bucket(path):
        raise argparse.ArgumentTypeError(
            f"{path!r}: this command writes its results to a local directory; give a local "
            "path (tools.sweep and tools.train write to gs:// and s3:// buckets)")
    return path
