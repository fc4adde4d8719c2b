"""Deterministic BitTorrent v2 metainfo for blobs.

A blob's torrent depends only on its bytes: the piece length follows from the size,
the name is the digest's hex, and nothing else goes into the info dictionary. Any
seeder that makes the torrent of the same blob therefore gets the same info-hash,
which is what lets seeders stand in for one another.
"""

import os
from dataclasses import dataclass

import libtorrent as lt

MIN_PIECE_LENGTH = 256 * 1024
MAX_PIECE_LENGTH = 16 * 1024 * 1024
TARGET_PIECES = 1024


def piece_length(size: int) -> int:
    """The piece length for a blob of ``size`` bytes: a power of two between 256 KiB
    and 16 MiB that gives at most about ``TARGET_PIECES`` pieces.

    Small pieces let a client's stream start early and spread early pieces fast;
    large ones keep the per-piece overhead (messages, hashes, alerts) low.
    """
    length = MIN_PIECE_LENGTH
    while length < MAX_PIECE_LENGTH and size > length * TARGET_PIECES:
        length *= 2
    return length


@dataclass(frozen=True)
class Metainfo:
    """What an agent needs to know of a blob's torrent."""

    data: bytes
    size: int
    piece_length: int
    num_pieces: int
    infohash: str  # hex of the v2 info-hash (SHA-256)

    @classmethod
    def parse(cls, data: bytes, name: str) -> "Metainfo":
        """Check a torrent received from a seeder: one file, named ``name``, v2."""
        try:
            info = lt.torrent_info(lt.bdecode(data))
        except Exception:
            raise ValueError("not a torrent") from None
        files = info.layout()
        real = [
            i
            for i in range(files.num_files())
            if not files.file_flags(i) & lt.file_storage.flag_pad_file
        ]
        if len(real) != 1 or info.name() != name or files.file_path(real[0]) != name:
            raise ValueError("torrent does not describe exactly the one blob")
        v2 = info.info_hashes().v2
        if v2.is_all_zeros():
            raise ValueError("torrent is not BitTorrent v2")
        return cls(
            data=data,
            size=files.file_size(real[0]),
            piece_length=info.piece_length(),
            num_pieces=info.num_pieces(),
            infohash=str(v2),
        )


def make_torrent(path: str) -> bytes:
    """Hash the blob file at ``path`` (named by its digest's hex) into v2 metainfo.

    Blocking and CPU-bound: call it from a thread.
    """
    directory, name = os.path.split(path)
    size = os.path.getsize(path)
    entry = lt.create_file_entry(name, size)
    creator = lt.create_torrent([entry], piece_length(size), lt.create_torrent.v2_only)
    creator.set_creation_date(0)
    lt.set_piece_hashes(creator, directory)
    return lt.bencode(creator.generate())
