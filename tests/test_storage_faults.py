"""Bad input on the way into a seeder's storage: an origin sending bytes that do
not match the digest, and the storage going away. Real registry, moto S3 server
and seeder process."""

from __future__ import annotations

import os
import time
from pathlib import Path

from eagle.lab.cluster import Cluster
from tests.test_lab import LabTestCase
from tests.test_mirror import TIMEOUT
from tests.test_seeder import get
from tests.test_seeders import start_origin_and_s3

MiB = 1 << 20
REPO = "eagle/faults"
BUCKET = "eagle-faults"


class StorageFaultTests(LabTestCase):
    def setUp(self):
        tmp = start_origin_and_s3(self, REPO, BUCKET, 6 * MiB)
        self.cluster = self.start(
            Cluster(
                tmp / "cluster",
                self.registry.url,
                agents=0,
                seeder_config={
                    "storage": self.s3.config(BUCKET, multipart_threshold="5MiB")
                },
            )
        )
        self.seeder = self.cluster.seeders[0]
        self.torrent = f"{self.seeder.url}/torrents/{self.digest}?repository={REPO}"

    def log(self) -> str:
        return Path(self.seeder.state_dir / "seeder0.log").read_text(errors="replace")

    def wait_for(self, what: str, check, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            self.assertLess(
                time.monotonic(), deadline, f"{what}:\n{self.log()[-3000:]}"
            )
            time.sleep(0.1)

    def test_origin_sends_other_bytes(self):
        """An origin whose blob does not match its digest: a 502 in OCI JSON, and
        nothing in the cache or the bucket, not even a pending upload."""
        stored = next(self.registry.storage_dir.rglob(f"sha256/*/{self.hex}/data"))
        stored.write_bytes(os.urandom(len(self.data)))
        status, headers, body = get(self.torrent)
        self.assertEqual(status, 502, body)
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertIn(b"does not match", body)
        self.assertEqual(os.listdir(self.seeder.state_dir / "data" / "blobs"), [])
        self.assertEqual(os.listdir(self.seeder.state_dir / "data" / "incoming"), [])
        self.assertEqual(self.s3.keys(BUCKET), [])
        self.assertEqual(self.s3.pending_uploads(BUCKET), [])

    def test_storage_down_then_back(self):
        """With S3 down the seeder still serves from the origin, logs each failed
        attempt to store, and stores the blob once S3 is back."""
        self.s3.stop()
        status, _, body = get(self.torrent)
        self.assertEqual(status, 200, body)
        self.assertIn("storage cannot say", self.log())
        self.wait_for("a failed store", lambda: "failed (attempt 1 of 4)" in self.log())
        self.s3.start()
        self.s3.create_bucket(BUCKET)
        key = f"blobs/sha256/{self.hex}"
        self.wait_for("the blob in S3", lambda: key in self.s3.keys(BUCKET), 30)
        self.assertEqual(self.s3.pending_uploads(BUCKET), [])
        obj = self.s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
        self.assertEqual(obj, self.data)
        self.assertEqual(self.registry.blob_gets(self.digest), 1)
