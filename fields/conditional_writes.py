"""Writes to one bucket object that succeed only if the object is as the writer last saw it.

The building block of a lock that holds across machines sharing a bucket: `create` succeeds
for exactly one of several writers racing for the same new object (GCS `ifGenerationMatch=0`,
S3 `If-None-Match: *`), and `replace` / `delete` only while the object is still the version
the caller read or wrote (GCS generation, S3 ETag). A `Version` is that token plus the
server's time of the write. Clients are google-cloud-storage and boto3, reached through the
standard endpoint variables (STORAGE_EMULATOR_HOST, AWS_ENDPOINT_URL).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools

from fields.paths import bucket_of, key_of, scheme


@dataclasses.dataclass(frozen=True)
class Version:
    token: str                      # GCS generation or S3 ETag
    written: datetime.datetime      # the server's time of that write (UTC)

    def age_s(self) -> float:
        return (datetime.datetime.now(datetime.timezone.utc) - self.written).total_seconds()


class Conflict(Exception):
    """The object was not in the state the write required (someone else wrote it)."""


@functools.cache
def _gcs():
    from google.cloud import storage

    return storage.Client()


@functools.cache
def _s3():
    import boto3

    return boto3.client("s3")


def _gcs_blob(url: str):
    return _gcs().bucket(bucket_of(url)).blob(key_of(url))


def _gcs_version(blob) -> Version:
    return Version(str(blob.generation), blob.updated)


def create(url: str, data: bytes) -> Version:
    """Write `url` only if no object is there; Conflict otherwise."""
    if scheme(url) == "gs":
        from google.api_core import exceptions

        blob = _gcs_blob(url)
        try:
            blob.upload_from_string(data, if_generation_match=0)
        except exceptions.PreconditionFailed:
            raise Conflict(url) from None
        return _gcs_version(blob)
    return _s3_put(url, data, IfNoneMatch="*")


def replace(url: str, data: bytes, version: Version) -> Version:
    """Overwrite `url` only if it is still at `version`; Conflict otherwise."""
    if scheme(url) == "gs":
        from google.api_core import exceptions

        blob = _gcs_blob(url)
        try:
            blob.upload_from_string(data, if_generation_match=int(version.token))
        except (exceptions.PreconditionFailed, exceptions.NotFound):
            raise Conflict(url) from None
        return _gcs_version(blob)
    return _s3_put(url, data, IfMatch=version.token)


def read(url: str) -> tuple[bytes, Version] | None:
    """(contents, version) of `url`, or None if there is no such object."""
    if scheme(url) == "gs":
        from google.api_core import exceptions

        for _ in range(5):  # the metadata and the bytes of one generation
            blob = _gcs().bucket(bucket_of(url)).get_blob(key_of(url))
            if blob is None:
                return None
            try:
                data = blob.download_as_bytes(if_generation_match=blob.generation)
            except (exceptions.PreconditionFailed, exceptions.NotFound):
                continue
            return data, _gcs_version(blob)
        raise Conflict(url)
    try:
        got = _s3().get_object(Bucket=bucket_of(url), Key=key_of(url))
    except _s3().exceptions.NoSuchKey:
        return None
    return got["Body"].read(), Version(got["ETag"], got["LastModified"])


def delete(url: str, version: Version) -> bool:
    """Delete `url` if it is still at `version` (False: someone else's by now)."""
    if scheme(url) == "gs":
        from google.api_core import exceptions

        try:
            _gcs_blob(url).delete(if_generation_match=int(version.token))
        except (exceptions.PreconditionFailed, exceptions.NotFound):
            return False
        return True
    current = read(url)
    if current is None or current[1].token != version.token:
        return False
    _s3().delete_object(Bucket=bucket_of(url), Key=key_of(url))  # S3 deletes unconditionally
    return True


def _s3_put(url: str, data: bytes, **condition) -> Version:
    from botocore.exceptions import ClientError

    try:
        put = _s3().put_object(Bucket=bucket_of(url), Key=key_of(url), Body=data, **condition)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("PreconditionFailed",
                                                         "ConditionalRequestConflict",
                                                         "NoSuchKey"):
            raise Conflict(url) from None
        raise
    head = _s3().head_object(Bucket=bucket_of(url), Key=key_of(url))
    return Version(put["ETag"], head["LastModified"])


def bucket_problem(url: str) -> str | None:
    """Why nothing can be written under `url`'s bucket (missing, refused), or None."""
    probe = url.rstrip("/") + "/.t5pod_write_probe"
    try:
        if scheme(url) == "gs":
            _gcs_blob(probe).upload_from_string(b"x")
            _gcs_blob(probe).delete()
        else:
            _s3().put_object(Bucket=bucket_of(url), Key=key_of(probe), Body=b"x")
            _s3().delete_object(Bucket=bucket_of(url), Key=key_of(probe))
    except Exception as e:  # noqa: BLE001 - every client error is the answer
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "NoSuchBucket" in text or "404" in text or "does not exist" in text:
            return f"bucket {bucket_of(url)} does not exist ({text[:200]})"
        return f"{type(e).__name__}: {text[:300]}"
    return None
