"""An S3-compatible endpoint: moto's server (``moto_server``, from the ``moto[server]``
package) on a loopback port, with the credentials and bucket the lab uses."""

from __future__ import annotations

import os
import shutil
import sys
import urllib.request
from pathlib import Path

from eagle.lab import Service, free_port

ACCESS_KEY = "eagle-lab"
SECRET_KEY = "eagle-lab-secret"
REGION = "us-east-1"

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def moto_server() -> str | None:
    """Where ``moto_server`` is: beside this Python (a virtualenv), else on PATH."""
    beside = Path(sys.executable).with_name("moto_server")
    return str(beside) if beside.exists() else shutil.which("moto_server")


class S3Server(Service):
    """``moto_server`` on 127.0.0.1:<free port>; its state lives in memory."""

    name = "moto"

    def __init__(self, state_dir: str | os.PathLike):
        super().__init__(state_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [moto_server() or "moto_server", "-H", "127.0.0.1", "-p", str(self.port)]

    def ready(self) -> bool:
        try:
            _direct.open(self.url + "/moto-api/data.json", timeout=2).close()
        except OSError:
            return False
        return True

    def client(self):
        """A boto3 client for this server."""
        from eagle.storage.s3 import client

        return client(self.url, REGION, ACCESS_KEY, SECRET_KEY, timeout=10)

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def config(self, bucket: str, **extra) -> dict:
        """A daemon's ``storage`` setting for this server's ``bucket``."""
        return {
            "backend": "s3",
            "s3": {
                "endpoint_url": self.url,
                "bucket": bucket,
                "region": REGION,
                "access_key_id": ACCESS_KEY,
                "secret_access_key": SECRET_KEY,
                **extra,
            },
        }

    def keys(self, bucket: str) -> list[str]:
        answer = self.client().list_objects_v2(Bucket=bucket)
        return [item["Key"] for item in answer.get("Contents", [])]

    def pending_uploads(self, bucket: str) -> list[str]:
        """Keys of multipart uploads begun and neither completed nor aborted."""
        answer = self.client().list_multipart_uploads(Bucket=bucket)
        return [upload["Key"] for upload in answer.get("Uploads", [])]
