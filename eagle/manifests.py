"""What the mirror remembers of manifests. No I/O.

A manifest fetched by digest never changes, so it is kept (within a byte budget)
and served again without asking the origin. A tag can move, so what it pointed to
is trusted only briefly, and older answers are used only when the origin fails or
rate-limits. Three rules keep the cache transparent and safe:

- It stores the origin's exact bytes with their Content-Type and digest, and
  answers with them only to a client whose Accept admits that type.
- A manifest that the origin gave without credentials is public; one it gave to a
  client with credentials is served from the cache only to a client presenting the
  same credentials, so no one reads a private manifest through the mirror.
- A manifest stored under a digest must hash to that digest.
"""

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

ANYONE = b""
# Seconds a tag's manifest is served without asking the origin again.
TAG_TTL = 10
# Bearer tokens change with every pull; remember only the latest few readers.
MAX_READERS = 32


def credential(authorization: bytes | None) -> bytes:
    """Who is asking, as a fingerprint of their credentials (never the secret)."""
    return hashlib.sha256(authorization).digest() if authorization else ANYONE


def accepts(accept: list[bytes], media_type: bytes) -> bool:
    """Whether a client's Accept header values admit ``media_type``.

    Without Accept, registries answer differently by manifest type (an OCI
    manifest is a 404 to such a client), so nothing counts as admitted: such
    requests always go to the origin.
    """
    wanted = media_type.split(b";")[0].strip()
    for value in accept:
        for item in value.split(b","):
            kind = item.split(b";")[0].strip()
            if kind in (wanted, b"*/*"):
                return True
    return False


@dataclass
class Manifest:
    """A manifest as the origin sent it, and who may see it."""

    body: bytes
    headers: list[tuple[bytes, list[bytes]]]  # Content-Type, Docker-Content-Digest..
    readers: set[bytes] = field(default_factory=set)
    stored: float = 0.0

    @property
    def media_type(self) -> bytes:
        for name, values in self.headers:
            if name.lower() == b"content-type":
                return values[0]
        return b"application/octet-stream"

    def visible_to(self, who: bytes) -> bool:
        return ANYONE in self.readers or who in self.readers


class ManifestCache:
    """Manifests by digest (kept) and by tag (trusted for ``tag_ttl`` seconds)."""

    def __init__(self, clock, max_bytes: int = 64 * 1024 * 1024, tag_ttl=TAG_TTL):
        self.clock = clock
        self.max_bytes = max_bytes
        self.tag_ttl = tag_ttl
        self._entries: OrderedDict[tuple, Manifest] = OrderedDict()
        self._bytes = 0

    def lookup(
        self, key: tuple, accept: list[bytes], who: bytes, stale: bool = False
    ) -> Manifest | None:
        """The manifest for ``key`` = (registry, repository, reference) if this
        client may have it from the cache; tags only while fresh unless
        ``stale``."""
        entry = self._entries.get(key)
        if entry is None or not entry.visible_to(who):
            return None
        if not accepts(accept, entry.media_type):
            return None
        is_tag = ":" not in key[2]
        if is_tag and not stale and self.clock.seconds() - entry.stored > self.tag_ttl:
            return None
        self._entries.move_to_end(key)
        return entry

    def store(self, key: tuple, body: bytes, headers, who: bytes) -> None:
        """Remember what the origin answered to ``who`` for ``key``."""
        reference = key[2]
        if ":" in reference:
            algorithm, _, hex_ = reference.partition(":")
            if algorithm != "sha256" or hashlib.sha256(body).hexdigest() != hex_:
                return  # not what the digest names: keep nothing
        entry = self._entries.get(key)
        if entry is None or entry.body != body:
            self._drop(key)
            entry = Manifest(body, list(headers))
            self._entries[key] = entry
            self._bytes += len(body)
        entry.readers.discard(who)
        if len(entry.readers) >= MAX_READERS and ANYONE not in entry.readers:
            entry.readers.pop()
        entry.readers.add(who)
        entry.stored = self.clock.seconds()
        self._entries.move_to_end(key)
        while self._bytes > self.max_bytes and len(self._entries) > 1:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: tuple) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry.body)
