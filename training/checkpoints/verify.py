"""Checksums of a checkpoint step: written at save, verified before a restore.

Orbax checksums neither the array chunks nor its JSON files, so a flipped byte restores
silently. At save, once every host's files of a step are written and before orbax commits
the step (a rename on a local disk, `commit_success.txt` on a bucket), process 0 records the
size and CRC-32 of every file in `MANIFEST`, which the commit then covers. Every file is
read and written through the path layer (fields/paths.py), so steps on gs:// verify alike.
Before a restore, `verify_step` reads every file back and compares. A step written before
manifests existed is checked for its required files and readable JSON only
(fields/old_formats.py), and is reported as unverified.
"""

from __future__ import annotations

import json
import zlib

from fields import old_formats, paths

MANIFEST = "t5pod_manifest.json"
# Written (or rewritten, with the commit time) by orbax after the manifest: required, and
# the JSON one readable, but not checksummed.
_AFTER_MANIFEST = ("commit_success.txt", "_CHECKPOINT_METADATA")
_CHUNK = 8 << 20


class DamagedCheckpoint(Exception):
    """A checkpoint step that must not be restored: `path` is the bad file, `reason` why."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


def _crc32(path: str) -> int:
    crc = 0
    with paths.open_read(path) as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def _files(step_dir: str) -> list[str]:
    """Every file under step_dir, relative, sorted; the manifest and late markers excluded."""
    return [rel for rel in paths.walk_files(step_dir)
            if rel != MANIFEST and rel not in _AFTER_MANIFEST]


def write_manifest(step_dir: str, step: int) -> None:
    """Record size and CRC-32 of every file of the (complete, not yet renamed) step."""
    files = {}
    for rel in _files(step_dir):
        path = paths.join(step_dir, rel)
        files[rel] = [paths.getsize(path), _crc32(path)]
    paths.write_text(paths.join(step_dir, MANIFEST), json.dumps(
        {"format": 1, "step": step, "files": files, "crc": _files_crc(files)}, indent=0))


def _files_crc(files: dict) -> int:
    return zlib.crc32(json.dumps(files, sort_keys=True).encode())


def read_json(path: str):
    """A checkpoint's JSON file, or DamagedCheckpoint naming it."""
    try:
        return json.loads(paths.read_text(path))
    except FileNotFoundError:
        raise DamagedCheckpoint(path, "missing") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise DamagedCheckpoint(path, f"not valid JSON ({e})") from None


def has_manifest(step_dir: str) -> bool:
    return paths.exists(paths.join(step_dir, MANIFEST))


def _array_data(rel: str) -> bool:
    """Whether `rel` is an OCDBT data file (`ITEM/ocdbt.process_N/d/NAME`): array chunks."""
    parts = rel.split("/")
    return (len(parts) >= 3 and parts[-2] == "d"
            and any(p.startswith("ocdbt.process_") for p in parts[:-2]))


def _missing(step_dir: str, rel: str):
    raise DamagedCheckpoint(paths.join(step_dir, rel), "missing")


def verify_step(step_dir: str, data: bool = True) -> bool:
    """True if every file matches the step's manifest, False if the step has none (written
    before manifests existed; required files present and JSON readable); else raises
    DamagedCheckpoint naming the first bad file and what is wrong with it.

    `data=False` (a restore that reads part of the arrays, e.g. one TreeDNN branch): the
    array data files are checked by size, not checksum, since a checksum reads them whole."""
    if not paths.isdir(step_dir):
        raise DamagedCheckpoint(step_dir, "no such checkpoint step")
    present = set(paths.walk_files(step_dir))
    manifest_path = paths.join(step_dir, MANIFEST)
    has_manifest = MANIFEST in present
    if not has_manifest:  # saved before manifests (old_formats)
        old_formats.check_step_without_manifest(
            step_dir, present, lambda rel: _missing(step_dir, rel),
            lambda rel: read_json(paths.join(step_dir, rel)))
        return False
    for rel in _AFTER_MANIFEST:
        if rel not in present:
            _missing(step_dir, rel)
    read_json(paths.join(step_dir, "_CHECKPOINT_METADATA"))
    manifest = read_json(manifest_path)
    try:
        files = dict(manifest["files"])
        intact = manifest["crc"] == _files_crc(files)
    except (KeyError, TypeError, ValueError):
        raise DamagedCheckpoint(manifest_path, "not a t5pod manifest") from None
    if not intact:
        raise DamagedCheckpoint(manifest_path, "contents changed since the save (CRC-32 "
                                               "mismatch)")
    for rel, (size, crc) in sorted(files.items()):
        path = paths.join(step_dir, rel)
        if rel not in present:
            raise DamagedCheckpoint(path, "missing")
        actual = paths.getsize(path)
        if actual != size:
            raise DamagedCheckpoint(path, f"{actual} bytes, {size} when saved (truncated or "
                                          "overwritten)")
        if (data or not _array_data(rel)) and _crc32(path) != crc:
            raise DamagedCheckpoint(path, "contents changed since the save (CRC-32 mismatch)")
    return True
