"""Each host's input-feed state in a checkpoint step: `input/process_I-of-N.json`.

Orbax's JSON item is written by the primary host only; a feed's state is per host, so this
handler (an orbax CheckpointHandler, saved with the step like any item) has every host
write its own file. They are written before orbax commits the step, so the step's CRC
manifest (verify.py) covers them: a damaged one makes the step damaged, and the restore
falls back like for any other file. Reading prefers this host's file; a step saved under
another host count gives host 0's (the batch position is the same on every host), and a
step saved before per-host files gives orbax's `input/metadata` (fields/old_formats.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from fields import old_formats, paths

_NAME = re.compile(r"process_(\d+)-of-(\d+)\.json$")


def file_name(index: int, count: int) -> str:
    return f"process_{index}-of-{count}.json"


def read(directory: str, index: int, count: int) -> dict:
    """This host's saved feed state from an `input` item directory ({} if none was saved)."""
    names = paths.listdir(directory)
    others = sorted((m for m in map(_NAME.match, names) if m), key=lambda m: int(m.group(1)))
    if file_name(index, count) in names:
        path = paths.join(directory, file_name(index, count))
    elif others:
        path = paths.join(directory, others[0].group(0))
    elif old_formats.FEED_STATE_FILE in names:
        path = paths.join(directory, old_formats.FEED_STATE_FILE)
    else:
        return {}
    return json.loads(paths.read_text(path))


class HostStateHandler(ocp.CheckpointHandler):
    """Writes and reads one JSON file per host (see the module docstring). Synchronous:
    orbax runs it once the step's directories exist, which it awaits for such handlers."""

    def save(self, directory: epath.Path, args: "HostStateSave"):
        path = epath.Path(directory) / file_name(jax.process_index(), jax.process_count())
        path.write_text(json.dumps(args.item))

    def restore(self, directory: epath.Path, args: "HostStateRestore | None" = None) -> dict:
        return read(os.fspath(directory), jax.process_index(), jax.process_count())

    def metadata(self, directory: epath.Path) -> None:
        return None

    def finalize(self, directory: epath.Path) -> None:
        pass

    def close(self) -> None:
        pass


@ocp.args.register_with_handler(HostStateHandler, for_save=True)
@dataclasses.dataclass
class HostStateSave(ocp.args.CheckpointArgs):
    item: Any


@ocp.args.register_with_handler(HostStateHandler, for_restore=True)
@dataclasses.dataclass
class HostStateRestore(ocp.args.CheckpointArgs):
    item: Any = None
