"""Where blobs come from: the cache, else one shared fetch from a source.

Sources:

- ``HTTPSource``: over HTTP from the owning seeder (then the next ones), then the
  origin. This is eagle-proxy's path and the agent's fallback.
- ``SwarmSource``: the blob's torrent from its seeder, then the bytes from the
  swarm; what the agent does for blobs big enough to be worth a swarm.
"""

import hashlib
import os
from collections import Counter
from urllib.parse import urlencode

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import Interface, implementer

from eagle import errors
from eagle.cache import BlobCache
from eagle.fetch import (
    discard,
    open_blob,
    pass_headers,
    read_limited,
    request_headers,
)
from eagle.rendezvous import rank
from eagle.singleflight import SingleFlight
from eagle.swarm import Swarm
from eagle.torrent import Metainfo
from eagle.transfer import PieceProgress, Transfer
from eagle.upstream import BlobRef

TORRENT_LIMIT = 8 * 1024 * 1024


class IBlobSource(Interface):
    def start(ref: BlobRef):
        """Begin fetching a blob into the cache; awaitable, giving its Transfer
        once its size is known."""


class Blobs:
    """The blobs of one cache, each fetched at most once at a time."""

    log = Logger()

    def __init__(self, cache: BlobCache, source: IBlobSource):
        self.cache = cache
        self.source = source
        self._transfers: dict[str, Transfer] = {}
        self._starting = SingleFlight()

    async def open(self, ref: BlobRef) -> Transfer:
        """The blob's Transfer: complete if cached, else a running fetch."""
        if self.cache.has(ref.hex):
            self.cache.touch(ref.hex)
            path = self.cache.blob_path(ref.hex)
            transfer = Transfer(str(ref.digest), os.path.getsize(path), path, "cache")
            transfer.succeed(path)
            return transfer
        running = self._transfers.get(ref.hex)
        if running is not None:
            return running
        transfer = await self._starting.run(ref.hex, lambda: self._start(ref))
        return transfer

    async def _start(self, ref: BlobRef) -> Transfer:
        transfer = await self.source.start(ref)
        if not transfer.ended:
            self._transfers[ref.hex] = transfer
            self.cache.pin(ref.hex)

            def ended(result):
                self._transfers.pop(ref.hex, None)
                self.cache.unpin(ref.hex)

            transfer.ended_deferred().addBoth(ended)
        return transfer


class Traffic:
    """Bytes received, by source: origin, seeder (HTTP or swarm) and peer."""

    def __init__(self):
        self.received = Counter()

    def add(self, source: str, count: int) -> None:
        self.received[source] += count


def _count_when_verified(transfer: Transfer, traffic: Traffic, source: str) -> None:
    transfer.ended_deferred().addCallbacks(
        lambda _: traffic.add(source, transfer.size), lambda f: None
    )


@implementer(IBlobSource)
class HTTPSource:
    """Blobs over HTTP: from the owning seeder or the next, then from the origin."""

    log = Logger()

    def __init__(self, http, reactor, cache, seeders, traffic, origin=True):
        self.http = http
        self.reactor = reactor
        self.cache = cache
        self.seeders = list(seeders)
        self.traffic = traffic
        self.origin = origin

    async def start(self, ref: BlobRef) -> Transfer:
        headers = request_headers(ref.authorization)
        failures = []
        for seeder in rank(ref.hex, self.seeders):
            url = seeder_url(seeder, f"/v2/{ref.repository}/blobs/{ref.digest}", ref)
            try:
                transfer = await open_blob(
                    self.http,
                    self.reactor,
                    url,
                    headers,
                    self.cache,
                    str(ref.digest),
                    "seeder",
                )
            except errors.RegistryError as e:
                if e.status < 500:
                    raise
                failures.append(f"{seeder}: {e.detail}")
                continue
            _count_when_verified(transfer, self.traffic, "seeder")
            return transfer
        if not self.origin:
            raise errors.upstream_unavailable("seeders", "; ".join(failures))
        if failures:
            self.log.warn(
                "no seeder could serve {digest}, fetching from the origin: {why}",
                digest=str(ref.digest),
                why="; ".join(failures),
            )
        url = ref.upstream.blob_url(ref.repository, ref.digest)
        transfer = await open_blob(
            self.http,
            self.reactor,
            url,
            headers,
            self.cache,
            str(ref.digest),
            "origin",
        )
        _count_when_verified(transfer, self.traffic, "origin")
        return transfer


def seeder_url(seeder: str, path: str, ref: BlobRef) -> str:
    query = urlencode({"ns": ref.upstream.host, "repository": ref.repository})
    return f"{seeder.rstrip('/')}{path}?{query}"


@implementer(IBlobSource)
class SwarmSource:
    """Blobs from the swarm, with the torrent from the blob's seeder.

    Blobs smaller than ``min_size`` are not worth a swarm's setup and come over
    HTTP instead, as does everything when no seeder can hand out a torrent.
    """

    log = Logger()

    def __init__(self, swarm: Swarm, http_source: HTTPSource, min_size: int):
        self.swarm = swarm
        self.http_source = http_source
        self.min_size = min_size

    @property
    def cache(self) -> BlobCache:
        return self.http_source.cache

    async def start(self, ref: BlobRef) -> Transfer:
        try:
            metainfo = await self.torrent(ref)
        except errors.RegistryError as e:
            if e.status < 500:
                raise
            self.log.warn(
                "no torrent for {digest} ({reason}); falling back to HTTP",
                digest=str(ref.digest),
                reason=e.detail,
            )
            return await self.http_source.start(ref)
        if metainfo.size < self.min_size:
            return await self.http_source.start(ref)
        return self._download(ref, metainfo)

    async def torrent(self, ref: BlobRef) -> Metainfo:
        """The blob's torrent from its seeder, or the next seeder if that one fails."""
        http = self.http_source
        failures = []
        for seeder in rank(ref.hex, http.seeders):
            url = seeder_url(seeder, f"/torrents/{ref.digest}", ref)
            try:
                response = await http.http.get(
                    url, headers=request_headers(ref.authorization), timeout=30
                )
                if response.code != 200:
                    await _refusal(response, http.reactor, seeder)
                data = await read_limited(response, TORRENT_LIMIT, http.reactor)
                return Metainfo.parse(data, ref.hex)
            except errors.RegistryError as e:
                if e.status < 500:
                    raise
                failures.append(f"{seeder}: {e.detail}")
            except errors.UpstreamAnswer:
                raise
            except Exception as e:
                failures.append(f"{seeder}: {e}")
        raise errors.upstream_unavailable("seeders", "; ".join(failures) or "none")

    def _download(self, ref: BlobRef, metainfo: Metainfo) -> Transfer:
        cache = self.cache
        cache.reserve(metainfo.size)
        path = os.path.join(cache.incoming, ref.hex)
        transfer = Transfer(str(ref.digest), metainfo.size, path, "swarm")
        progress = PieceProgress(metainfo.size, metainfo.piece_length)
        hasher = _PrefixHasher(path)

        def on_piece(piece: int) -> None:
            available = progress.add(piece)
            try:
                hasher.advance(available)
            except OSError as e:
                return failed(str(e))
            transfer.advance(available)

        def on_finished() -> None:
            Deferred.fromCoroutine(finish()).addErrback(
                lambda f: failed(f.getErrorMessage())
            )

        async def finish() -> None:
            hasher.advance(metainfo.size)
            if hasher.hexdigest() != ref.hex:
                raise ValueError(
                    "swarm delivered a blob that does not match its digest"
                )
            await self.swarm.move(metainfo.infohash, cache.blobs)
            cache.save_torrent(ref.hex, metainfo.data)
            cache.committed_in_place(ref.hex)
            for kind, count in self.swarm.bytes_by_kind(metainfo.infohash).items():
                self.http_source.traffic.add(kind, count)
            self.log.info(
                "fetched {digest} ({size} bytes) through the swarm",
                digest=str(ref.digest),
                size=metainfo.size,
            )
            transfer.succeed(cache.blob_path(ref.hex))

        def failed(reason: str) -> None:
            if transfer.ended:
                return
            self.log.warn(
                "swarm download of {digest} failed: {reason}",
                digest=str(ref.digest),
                reason=reason,
            )
            self.swarm.remove(metainfo.infohash)
            hasher.close()
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
            transfer.fail(RuntimeError(reason))

        self.swarm.download(metainfo, cache.incoming, on_piece, on_finished, failed)
        return transfer


class _PrefixHasher:
    """SHA-256 of a file's prefix, extended as the prefix grows."""

    def __init__(self, path: str):
        self.path = path
        self._sha256 = hashlib.sha256()
        self._hashed = 0
        self._file = None

    def advance(self, available: int) -> None:
        if available <= self._hashed:
            return
        if self._file is None:
            self._file = open(self.path, "rb")
        self._file.seek(self._hashed)
        while self._hashed < available:
            data = self._file.read(min(1 << 20, available - self._hashed))
            if not data:
                raise OSError(f"{self.path} is shorter than {available} bytes")
            self._sha256.update(data)
            self._hashed += len(data)

    def hexdigest(self) -> str:
        self.close()
        return self._sha256.hexdigest()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


async def _refusal(response, reactor, seeder: str):
    """Raise what a seeder's non-200 answer means for our client."""
    if response.code in (401, 403, 429):
        body = await read_limited(response, 64 * 1024, reactor)
        raise errors.UpstreamAnswer(response.code, pass_headers(response), body)
    if response.code == 404:
        discard(response)
        raise errors.RegistryError(404, "BLOB_UNKNOWN", "blob unknown to registry")
    discard(response)
    raise errors.upstream_bad_reply(seeder, f"status {response.code}")
