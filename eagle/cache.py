"""The on-disk blob cache shared by agents, proxies and seeders.

Layout under the cache directory::

    blobs/<sha256 hex>      verified blobs only: a file here is always complete
    torrents/<sha256 hex>   the blob's torrent metainfo, when it has one
    incoming/               blobs being fetched; emptied at start

A blob is stored once, whatever repositories refer to it, since it is keyed by
digest alone. Files reach ``blobs/`` by an atomic rename after verification, so a
crash leaves at worst a stray file in ``incoming/``.
"""

import os
import shutil
import time
from collections.abc import Callable

from twisted.logger import Logger

from eagle.lru import LRUAccounting


class BlobCache:
    log = Logger()

    def __init__(
        self,
        directory: str,
        max_bytes: int,
        on_evict: Callable[[str], None] = lambda hex_: None,
        in_use: Callable[[str], bool] = lambda hex_: False,
    ):
        """``on_evict(hex)`` is told of each blob evicted (to stop seeding it);
        ``in_use(hex)`` spares blobs busy beyond the pins (peers downloading)."""
        self.directory = directory
        self.blobs = os.path.join(directory, "blobs")
        self.torrents = os.path.join(directory, "torrents")
        self.incoming = os.path.join(directory, "incoming")
        self.lru = LRUAccounting(max_bytes)
        self.on_evict = on_evict
        self.in_use = in_use
        for path in (self.blobs, self.torrents, self.incoming):
            os.makedirs(path, exist_ok=True)
        self._load()

    def _load(self) -> None:
        """Rebuild the accounting from disk, oldest access first."""
        # FIXME(issue 7): resume partial swarm downloads from libtorrent's resume data
        # instead of starting them over; until then what was incoming is dropped.
        shutil.rmtree(self.incoming)
        os.makedirs(self.incoming)
        entries = []
        for entry in os.scandir(self.blobs):
            if entry.is_file():
                st = entry.stat()
                entries.append((st.st_atime, entry.name, st.st_size))
        for _, hex_, size in sorted(entries):
            self.lru.add(hex_, size)
        self.log.info(
            "cache {directory} holds {count} blobs, {total} bytes",
            directory=self.directory,
            count=len(self.lru),
            total=self.lru.total,
        )
        self.evict()

    def blob_path(self, hex_: str) -> str:
        return os.path.join(self.blobs, hex_)

    def torrent_path(self, hex_: str) -> str:
        return os.path.join(self.torrents, hex_)

    def incoming_path(self, hex_: str, suffix: str) -> str:
        return os.path.join(self.incoming, f"{hex_}.{suffix}")

    def has(self, hex_: str) -> bool:
        return hex_ in self.lru

    def size(self, hex_: str) -> int:
        return os.path.getsize(self.blob_path(hex_))

    def touch(self, hex_: str) -> None:
        if hex_ in self.lru:
            self.lru.touch(hex_)
            # The access time orders the rebuild after a restart (file systems
            # mounted noatime or relatime would not keep it for us).
            try:
                path = self.blob_path(hex_)
                os.utime(path, (time.time(), os.stat(path).st_mtime))
            except OSError:
                pass

    def pin(self, hex_: str) -> None:
        self.lru.pin(hex_)

    def unpin(self, hex_: str) -> None:
        self.lru.unpin(hex_)
        self.evict()  # what the pin held over budget may go now

    def commit(self, hex_: str, path: str) -> str:
        """Move a verified blob from ``path`` into the cache and return its path."""
        final = self.blob_path(hex_)
        if os.path.abspath(path) != final:
            os.replace(path, final)
        self.lru.add(hex_, os.path.getsize(final))
        self.evict()
        return final

    def committed_in_place(self, hex_: str) -> None:
        """Account a blob that another component (libtorrent) moved into place."""
        self.lru.add(hex_, os.path.getsize(self.blob_path(hex_)))
        self.evict()

    def save_torrent(self, hex_: str, data: bytes) -> None:
        tmp = self.incoming_path(hex_, "torrent")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.torrent_path(hex_))

    def load_torrent(self, hex_: str) -> bytes | None:
        try:
            with open(self.torrent_path(hex_), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def reserve(self, size: int) -> None:
        """Make room for ``size`` bytes about to be written."""
        self.evict(size)

    def evict(self, incoming: int = 0) -> None:
        for hex_ in self.lru.victims(incoming, self.in_use):
            self._drop(hex_)

    def evict_blob(self, hex_: str) -> bool:
        """Evict one cached blob now, unless it is in use (then False)."""
        if self.lru.pinned(hex_) or self.in_use(hex_):
            return False
        if hex_ in self.lru:
            self._drop(hex_)
        return True

    def _drop(self, hex_: str) -> None:
        self.lru.remove(hex_)
        self.on_evict(hex_)
        _remove(self.blob_path(hex_))
        _remove(self.torrent_path(hex_))
        self.log.info("evicted blob {digest}", digest="sha256:" + hex_)

    def list(self) -> list[str]:
        return self.lru.keys()


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
