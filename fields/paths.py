"""The one path layer: every path a user gives is a local path, `gs://...` or `s3://...`.

`user_path` checks a typed path once, before anything is written: an empty value, an
unknown scheme (`hdfs://`, `az://`) or a malformed URL (`gs:/bucket`, `gs:bucket`) is refused
naming the flag and the schemes that work, so no local directory named `gs:` is ever
created. Local paths come back absolute, URLs as given. The functions below read and write
through etils.epath (gcsfs / s3fs for buckets; orbax uses the same Path type), in the
object-store way everywhere: small files are written in one shot (a local file through a
temporary name and a rename), never appended to, and nothing is renamed on a bucket.

Endpoints come from the standard variables (STORAGE_EMULATOR_HOST, AWS_ENDPOINT_URL, ...).
etils routes gs:// through TensorFlow's gfile whenever TensorFlow is installed, and gfile
takes no endpoint: t5pod asks etils for its fsspec backend unless EPATH_USE_TF is set.
"""

from __future__ import annotations

import atexit
import contextlib
import fnmatch
import functools
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterator

os.environ.setdefault("EPATH_USE_TF", "false")  # read (and cached) by etils at first use

SCHEMES = ("gs", "s3")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


class BadPath(ValueError):
    """A path no t5pod code may read or write (empty, unknown scheme, malformed URL)."""


def user_path(value, flag: str) -> str:
    """`value` as t5pod uses it: a local path made absolute, or a gs:// / s3:// URL.

    `flag` names where the user typed it (e.g. "--model_dir"), for the message; "" where
    the caller names it (argparse)."""
    if value is None or not isinstance(value, (str, os.PathLike)):
        raise BadPath(f"{_named(flag, value)} must be a path: a local path, gs://BUCKET/... "
                      "or s3://BUCKET/...")
    text = os.fspath(value).strip() if isinstance(value, str) else os.fspath(value)
    if not text:
        raise BadPath(f"{_named(flag, os.fspath(value))} is empty (an unset shell variable?): "
                      "give a file or directory path (local, gs://BUCKET/... or "
                      "s3://BUCKET/...)")
    match = _SCHEME.match(text)
    if match is None:
        return os.path.abspath(os.path.expanduser(text))
    scheme = match.group(1)
    if scheme.lower() not in SCHEMES:
        raise BadPath(f"{_named(flag, text)}: t5pod reads and writes local paths, gs:// and "
                      f"s3:// only, not {scheme}:// (a local name with a ':' in it: write "
                      f"./{text})")
    rest = text[len(scheme) + 1:]
    if scheme not in SCHEMES or not rest.startswith("//"):
        raise BadPath(f"{_named(flag, text)} is not a bucket URL; write it as "
                      f"{scheme.lower()}://BUCKET/PATH")
    bucket = rest[2:].split("/", 1)[0]
    if not _BUCKET.match(bucket):
        raise BadPath(f"{_named(flag, text)}: {bucket!r} is not a bucket name (3-222 lowercase "
                      "letters, digits, '.', '-', '_'); write it as "
                      f"{scheme}://BUCKET/PATH")
    _configure_clients()
    return text.rstrip("/")


def _named(flag: str, value) -> str:
    return f"{flag}={value!r}" if flag else repr(value)


def is_bucket(path) -> bool:
    """Whether `path` (already checked) is on an object store."""
    return os.fspath(path).startswith(tuple(f"{s}://" for s in SCHEMES))


def scheme(path) -> str:
    """"gs", "s3" or "local"."""
    text = os.fspath(path)
    return text.split("://", 1)[0] if is_bucket(text) else "local"


def bucket_of(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0]


def key_of(url: str) -> str:
    """The object name under the bucket ('' for the bucket itself)."""
    rest = url.split("://", 1)[1]
    return rest.split("/", 1)[1] if "/" in rest else ""


def join(path, *parts: str) -> str:
    """`path`/parts, with '/' on buckets."""
    text = os.fspath(path)
    return posixpath.join(text, *parts) if is_bucket(text) else os.path.join(text, *parts)


def parent(path) -> str:
    text = os.fspath(path)
    return posixpath.dirname(text) if is_bucket(text) else os.path.dirname(text)


def name(path) -> str:
    text = os.fspath(path)
    return posixpath.basename(text) if is_bucket(text) else os.path.basename(text)


def epath_of(path):
    """The etils Path (orbax's type) of a checked path."""
    from etils import epath

    if is_bucket(path):
        _configure_clients()
    return epath.Path(os.fspath(path))


@functools.cache
def _configure_clients() -> None:
    """Before gcsfs / s3fs are first made: no cached listings (other hosts and tensorstore
    write the same prefixes, so a listing must be read anew), and against an emulator
    (STORAGE_EMULATOR_HOST) no lookup of the storage-control API, which emulators lack."""
    import fsspec

    for protocol in ("gs", "gcs", "s3"):
        fsspec.config.conf.setdefault(protocol, {}).setdefault("use_listings_cache", False)
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


# -- reading ---------------------------------------------------------------------------------


def exists(path) -> bool:
    return os.path.exists(path) if not is_bucket(path) else epath_of(path).exists()


def isdir(path) -> bool:
    """A local directory, or a bucket prefix holding at least one object."""
    return os.path.isdir(path) if not is_bucket(path) else epath_of(path).is_dir()


def isfile(path) -> bool:
    return os.path.isfile(path) if not is_bucket(path) else epath_of(path).is_file()


def listdir(path) -> list[str]:
    """Names directly under `path`, sorted ([] where there is nothing)."""
    if not is_bucket(path):
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    p = epath_of(path)
    return sorted(c.name for c in p.iterdir()) if p.is_dir() else []


def walk_files(path) -> list[str]:
    """Every file under `path`, relative with '/', sorted."""
    if not is_bucket(path):
        out = []
        for root, _, names in os.walk(path):
            out += [os.path.relpath(os.path.join(root, n), path).replace(os.sep, "/")
                    for n in names]
        return sorted(out)
    out, todo = [], [("", epath_of(path))]
    if not todo[0][1].is_dir():
        return []
    while todo:
        rel, p = todo.pop()
        for child in p.iterdir():
            sub = f"{rel}{child.name}"
            if child.is_dir():
                todo.append((sub + "/", child))
            else:
                out.append(sub)
    return sorted(out)


def getsize(path) -> int:
    return os.path.getsize(path) if not is_bucket(path) else epath_of(path).stat().length


def read_bytes(path) -> bytes:
    if not is_bucket(path):
        with open(path, "rb") as f:
            return f.read()
    return epath_of(path).read_bytes()


def read_text(path) -> str:
    return read_bytes(path).decode("utf-8")


@contextlib.contextmanager
def open_read(path, mode: str = "rb"):
    """A file object for streaming reads (chunked on buckets)."""
    f = open(path, mode) if not is_bucket(path) else epath_of(path).open(mode)
    try:
        yield f
    finally:
        f.close()


def glob(pattern: str) -> list[str]:
    """Files matching `pattern`, sorted. On buckets '*' and '?' match within one name and the
    directories above the last '*' must be fixed (no recursive '**')."""
    if not is_bucket(pattern):
        import glob as globlib

        return sorted(globlib.glob(os.path.expanduser(pattern)))
    if "**" in pattern:
        raise BadPath(f"{pattern}: '**' is not supported on buckets (one listing per "
                      "directory); name the directory and match files with '*'")
    parts = pattern.split("/")
    fixed = next(i for i, part in enumerate(parts) if any(c in part for c in "*?[") or
                 i == len(parts) - 1)
    found = ["/".join(parts[:fixed])]
    for part in parts[fixed:]:
        found = [join(d, n) for d in found for n in listdir(d) if fnmatch.fnmatchcase(n, part)]
    return sorted(f for f in found if isfile(f))


@contextlib.contextmanager
def local_copy(path) -> Iterator[str]:
    """A local path holding `path` (a file or a directory): itself where local, else a
    temporary download removed afterwards (for readers that need a file: safetensors,
    tensorstore's file driver)."""
    if not is_bucket(path):
        yield os.fspath(path)
        return
    with tempfile.TemporaryDirectory(prefix="t5pod_download_") as tmp:
        target = os.path.join(tmp, name(path) or "download")
        files = ([(join(path, rel), os.path.join(target, *rel.split("/")))
                  for rel in walk_files(path)] if isdir(path) else [(path, target)])
        for src, dst in files:  # streamed: a weights file need not fit in memory
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open_read(src) as r, open(dst, "wb") as w:
                shutil.copyfileobj(r, w, 8 << 20)
        yield target


def downloaded(path) -> str:
    """A local copy of `path` kept for the rest of the process (removed at exit), made once
    per path; a local path itself. For a reader that opens the file again and again."""
    if not is_bucket(path):
        return os.fspath(path)
    if path not in _downloads:
        copy = local_copy(path)
        _downloads[path] = copy.__enter__()
        atexit.register(copy.__exit__, None, None, None)
    return _downloads[path]


_downloads: dict[str, str] = {}


# -- writing ---------------------------------------------------------------------------------


def makedirs(path) -> None:
    """A local directory (and its parents); nothing on buckets, which have no directories."""
    if not is_bucket(path):
        os.makedirs(path, exist_ok=True)


def write_bytes(path, data: bytes) -> None:
    """Write a whole file in one shot: a reader sees the old contents or the new, never a
    part (locally through a temporary file and a rename; an object upload is atomic)."""
    if is_bucket(path):
        epath_of(path).write_bytes(data)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def upload(local: str, path) -> None:
    """Copy the local file `local` to `path` (a bucket object or a local file), in one shot."""
    if not is_bucket(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        shutil.copyfile(local, path)
        return
    epath_of(local).copy(epath_of(path), overwrite=True)


def remove(path) -> None:
    """Delete one file; a missing one is not an error."""
    try:
        if is_bucket(path):
            epath_of(path).unlink()
        else:
            os.remove(path)
    except FileNotFoundError:
        pass


def rmtree(path) -> None:
    """Delete a directory (a bucket prefix) and everything under it."""
    if is_bucket(path):
        p = epath_of(path)
        if p.exists():
            p.rmtree()
    else:
        shutil.rmtree(path, ignore_errors=True)


def move_tree(src, dst, first: str | None = None) -> None:
    """Move a directory. Locally one rename; on a bucket, where a rename does not exist,
    `first` (a file name under `src`, e.g. a commit marker) moves before the rest, so
    whoever looks for it stops seeing `src` at once; then every object is copied and the
    originals are deleted."""
    if not is_bucket(src):
        os.rename(src, dst)
        return
    files = walk_files(src)
    for rel in sorted(files, key=lambda r: r != first):
        epath_of(join(src, rel)).copy(epath_of(join(dst, rel)), overwrite=True)
        if rel == first:
            remove(join(src, rel))
    rmtree(src)
