"""Blobs as files in a directory (local disk, NFS, any mounted file system)."""

import os

from zope.interface import implementer

from eagle.storage import (
    BlobNotFound,
    IBlobStorage,
    RangeReader,
    check_hex,
    incoming_name,
)


@implementer(IBlobStorage)
class FileStorage:
    """``<directory>/blobs/<hex>``, written under ``incoming/`` and renamed into
    place once complete, so a blob file is always whole."""

    def __init__(self, directory: str):
        self.blobs = os.path.join(directory, "blobs")
        self.incoming = os.path.join(directory, "incoming")
        os.makedirs(self.blobs, exist_ok=True)
        os.makedirs(self.incoming, exist_ok=True)

    def _path(self, hex_: str) -> str:
        return os.path.join(self.blobs, check_hex(hex_))

    def stat(self, hex_):
        try:
            return os.path.getsize(self._path(hex_))
        except FileNotFoundError:
            return None

    def open(self, hex_, first=0, length=None):
        try:
            f = open(self._path(hex_), "rb")
        except FileNotFoundError:
            raise BlobNotFound(hex_) from None
        f.seek(first)
        return RangeReader(f, length)

    def write(self, hex_, chunks):
        path = incoming_name(self.incoming, check_hex(hex_))
        try:
            with open(path, "xb") as f:
                for chunk in chunks:
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.replace(path, self._path(hex_))
        except BaseException:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
            raise

    def delete(self, hex_):
        try:
            os.remove(self._path(hex_))
        except FileNotFoundError:
            pass

    def list(self):
        for entry in os.scandir(self.blobs):
            if entry.is_file():
                yield entry.name
