"""Blobs as objects in an S3 bucket (AWS, MinIO, Ceph RGW, moto...), with boto3.

Small blobs go up in one PUT; blobs above ``part_size`` in a multipart upload of
parts that size, completed only after the whole blob verified and aborted on any
failure, so a bucket never holds a partial blob or a forgotten upload of ours.
Reads stream the object's body. At most one part is in memory at a time.
"""

from contextlib import contextmanager

import botocore.exceptions
from zope.interface import implementer

from eagle.storage import BlobNotFound, IBlobStorage, StorageUnavailable, check_hex

# S3 refuses parts smaller than this, except the last one.
MIN_PART_SIZE = 5 * 1024 * 1024


@implementer(IBlobStorage)
class S3Storage:
    def __init__(self, client, bucket: str, prefix: str = "", part_size: int = 0):
        """``client`` is a boto3 S3 client; keys are ``<prefix>blobs/sha256/<hex>``."""
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = max(part_size, MIN_PART_SIZE)

    def _key(self, hex_: str) -> str:
        return f"{self.prefix}blobs/sha256/{check_hex(hex_)}"

    def stat(self, hex_):
        with self._errors(hex_):
            try:
                answer = self.client.head_object(
                    Bucket=self.bucket, Key=self._key(hex_)
                )
            except botocore.exceptions.ClientError as e:
                if _code(e) == "404":  # a HEAD's answer has no error body
                    return None
                raise
        return answer["ContentLength"]

    def open(self, hex_, first=0, length=None):
        options = {}
        if first or length is not None:
            last = "" if length is None else first + length - 1
            options["Range"] = f"bytes={first}-{last}"
        with self._errors(hex_):
            answer = self.client.get_object(
                Bucket=self.bucket, Key=self._key(hex_), **options
            )
        return answer["Body"]

    def write(self, hex_, chunks):
        key = self._key(hex_)
        with self._errors(hex_):
            upload = _Multipart(self.client, self.bucket, key)
            buffer = bytearray()
            try:
                for chunk in chunks:
                    buffer += chunk
                    while len(buffer) >= self.part_size:
                        upload.add(bytes(buffer[: self.part_size]))
                        del buffer[: self.part_size]
                # The chunks verified: the blob may now become visible.
                if upload.id is None:
                    self.client.put_object(
                        Bucket=self.bucket, Key=key, Body=bytes(buffer)
                    )
                else:
                    if buffer:
                        upload.add(bytes(buffer))
                    upload.complete()
            except BaseException:
                upload.abort()
                raise

    def delete(self, hex_):
        with self._errors(hex_):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(hex_))

    def list(self):
        start = f"{self.prefix}blobs/sha256/"
        with self._errors(None):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield item["Key"][len(start) :]

    @contextmanager
    def _errors(self, hex_):
        """S3's failures as StorageErrors that say which bucket and blob."""
        where = f"s3 bucket {self.bucket}"
        try:
            yield
        except botocore.exceptions.ClientError as e:
            if _code(e) in ("NoSuchKey", "404") and hex_ is not None:
                raise BlobNotFound(hex_) from None
            raise StorageUnavailable(f"{where}: {e}") from None
        except botocore.exceptions.BotoCoreError as e:
            # Connection refused or timed out, credentials missing...
            raise StorageUnavailable(f"{where}: {e}") from None


class _Multipart:
    """A multipart upload, begun with its first part."""

    def __init__(self, client, bucket: str, key: str):
        self.client, self.bucket, self.key = client, bucket, key
        self.id = None
        self.parts = []

    def add(self, data: bytes) -> None:
        if self.id is None:
            self.id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key
            )["UploadId"]
        number = len(self.parts) + 1
        answer = self.client.upload_part(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.id,
            PartNumber=number,
            Body=data,
        )
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def complete(self) -> None:
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.id,
            MultipartUpload={"Parts": self.parts},
        )

    def abort(self) -> None:
        if self.id is None:
            return
        try:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.id
            )
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
            # A bucket lifecycle rule for incomplete uploads is the backstop.
            pass


def _code(error: botocore.exceptions.ClientError) -> str | None:
    return error.response.get("Error", {}).get("Code")


def client(
    endpoint_url: str | None,
    region: str,
    access_key_id: str | None,
    secret_access_key: str | None,
    timeout: float = 30,
):
    """A boto3 S3 client with bounded timeouts and retries, path-style addressing
    (what most S3-compatible servers need)."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=min(timeout, 5),
        read_timeout=timeout,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path"},
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=config,
    )
