"""Blobs in a dict: for tests, and the shortest example of a backend."""

import io

from zope.interface import implementer

from eagle.storage import BlobNotFound, IBlobStorage


@implementer(IBlobStorage)
class MemoryStorage:
    def __init__(self):
        self.blobs: dict[str, bytes] = {}

    def stat(self, hex_):
        blob = self.blobs.get(hex_)
        return None if blob is None else len(blob)

    def open(self, hex_, first=0, length=None):
        if hex_ not in self.blobs:
            raise BlobNotFound(hex_)
        end = None if length is None else first + length
        return io.BytesIO(self.blobs[hex_][first:end])

    def write(self, hex_, chunks):
        self.blobs[hex_] = b"".join(chunks)  # only once every chunk came

    def delete(self, hex_):
        self.blobs.pop(hex_, None)

    def list(self):
        return iter(list(self.blobs))
