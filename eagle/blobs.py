"""Where blobs come from: the cache, else one shared fetch from a source.

Sources:

- ``HTTPSource``: over HTTP from the owning seeder (then the next ones), then the
  origin. This is eagle-proxy's path and the agent's fallback.
- ``SwarmSource``: the blob's torrent from its seeder, then the bytes from the
  swarm; what the agent does for blobs big enough to be worth a swarm.
"""

import errno
import hashlib
import os
import secrets
from collections import Counter
from urllib.parse import urlencode

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import Interface, implementer

from eagle import errors
from eagle.cache import BlobCache, DiskFull
from eagle.fetch import (
    BadReply,
    BlobBody,
    discard,
    pass_headers,
    read_limited,
    reason,
    receive_blob,
    request_blob,
    request_headers,
)
from eagle.metrics import DETACHED
from eagle.rendezvous import rank
from eagle.singleflight import SingleFlight
from eagle.swarm import Swarm
from eagle.torrent import Metainfo
from eagle.transfer import PieceProgress, Transfer
from eagle.upstream import BlobRef

TORRENT_LIMIT = 8 * 1024 * 1024
# After a ban, how long a swarm download may go without a piece before it is
# finished over HTTP; see _SwarmDownload._banned.
BAN_GRACE = 3.0
# The empty blob: nothing to fetch, and no torrent can describe it.
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


class IBlobSource(Interface):
    def start(ref: BlobRef):
        """Begin fetching a blob into the cache; awaitable, giving its Transfer
        once its size is known."""


class Blobs:
    """The blobs of one cache, each fetched at most once at a time."""

    log = Logger()
    metrics = DETACHED  # the daemon sets its own

    def __init__(self, cache: BlobCache, source: IBlobSource):
        self.cache = cache
        self.source = source
        self._transfers: dict[str, Transfer] = {}
        self._starting = SingleFlight()

    async def open(self, ref: BlobRef) -> Transfer:
        """The blob's Transfer: complete if cached, else a running fetch."""
        if ref.hex == EMPTY_SHA256:
            transfer = Transfer(str(ref.digest), 0, os.devnull, "cache")
            transfer.succeed(os.devnull)
            return transfer
        if self.cache.has(ref.hex):
            self.metrics.cache_hits.inc()
            self.cache.touch(ref.hex)
            path = self.cache.blob_path(ref.hex)
            transfer = Transfer(str(ref.digest), os.path.getsize(path), path, "cache")
            transfer.succeed(path)
            return transfer
        self.metrics.cache_misses.inc()
        running = self._transfers.get(ref.hex)
        if running is not None:
            return running
        transfer = await self._starting.run(ref.hex, lambda: self._start(ref))
        return transfer

    @property
    def running(self) -> int:
        """How many fetches are under way."""
        return len(self._transfers)

    def progress(self, hex_: str) -> int | None:
        """Bytes of a blob fetched so far, if a fetch of it is running."""
        transfer = self._transfers.get(hex_)
        return None if transfer is None else transfer.available

    async def _start(self, ref: BlobRef) -> Transfer:
        try:
            transfer = await self.source.start(ref)
        except DiskFull as e:
            self.log.warn(
                "no room for {digest}: {why}", digest=str(ref.digest), why=str(e)
            )
            raise errors.insufficient_storage(e.needed, e.free) from None
        if not transfer.ended:
            self._transfers[ref.hex] = transfer
            self.cache.pin(ref.hex)

            def ended(result):
                self._transfers.pop(ref.hex, None)
                self.cache.unpin(ref.hex)

            transfer.ended_deferred().addBoth(ended)
        return transfer


class Traffic:
    """Bytes received, by source: origin, seeder (HTTP or swarm) and peer; and
    the times a fetch fell back from its first way, by reason:

    - ``no_torrent``: no seeder gave the blob's torrent; HTTP at once
    - ``stalled``: the swarm gave no piece for ``swarm_timeout`` seconds
      (trackers down, no peer delivers); ``banned``: the same, shorter, once
      bans for corrupt data left the download without peers
    - ``swarm_error``: libtorrent reported an error
    - ``bad_blob``: the swarm's blob did not match its digest
    - ``next_seeder``: a seeder stopped sending part way; the next one goes on
    - ``origin``: no seeder could send the blob over HTTP; the origin did
    """

    def __init__(self):
        self.received = Counter()
        self.fallbacks = Counter()
        # Bytes of swarm downloads found on disk from before a restart.
        self.resumed = 0

    def add(self, source: str, count: int) -> None:
        self.received[source] += count

    def fell_back(self, reason: str) -> None:
        self.fallbacks[reason] += 1


@implementer(IBlobSource)
class HTTPSource:
    """Blobs over HTTP: from the owning seeder or the next, then from the origin."""

    log = Logger()
    metrics = DETACHED  # the daemon sets its own

    def __init__(
        self,
        http,
        reactor,
        cache,
        seeders,
        traffic,
        credentials=None,
        seeder_timeout: float = 30,
        limits=None,
    ):
        self.http = http
        self.limits = limits  # eagle.ratelimit.HostLimits, if any
        # A seeder that has not answered in this long is skipped for the next.
        self.seeder_timeout = seeder_timeout
        self.reactor = reactor
        self.cache = cache
        self.seeders = list(seeders)
        self.traffic = traffic
        self.credentials = credentials  # eagle.auth.Credentials, for the origin

    async def start(self, ref: BlobRef) -> Transfer:
        body = await self._request(ref, 0)
        try:
            self.cache.reserve(body.size)
        except DiskFull:
            discard(body.response)
            raise
        path = self.cache.incoming_path(ref.hex, secrets.token_hex(4))
        transfer = Transfer(str(ref.digest), body.size, path, body.source)
        Deferred.fromCoroutine(self._complete(ref, transfer, body, 0, hashlib.sha256()))
        return transfer

    async def resume(
        self, ref: BlobRef, transfer: Transfer, offset: int, sha256, skip=()
    ):
        """Complete a transfer whose first ``offset`` bytes are in its file, with
        ``sha256`` their hash so far, from any seeder but those in ``skip``."""
        try:
            body = await self._request(ref, offset, skip)
            if body.size != transfer.size:
                discard(body.response)
                raise ValueError(
                    f"{body.source} has {body.size} bytes, not {transfer.size}"
                )
        except Exception as e:
            return self._failed(transfer, e)
        await self._complete(ref, transfer, body, offset, sha256, skip)

    async def _request(self, ref: BlobRef, offset: int, skip=()) -> BlobBody:
        """The blob's body from byte ``offset``: from its seeders in rendezvous
        order (less those in ``skip``), else from the origin."""
        headers = request_headers(ref.authorization)

        def fetch(url: str, source: str, login=None, timeout=30):
            return request_blob(
                self.http,
                self.reactor,
                url,
                headers,
                str(ref.digest),
                source,
                offset,
                login,
                timeout,
            )

        failures = []
        for seeder in rank(ref.hex, self.seeders):
            if seeder in skip:
                continue
            url = seeder_url(seeder, f"/v2/{ref.repository}/blobs/{ref.digest}", ref)
            try:
                body = await fetch(url, "seeder", timeout=self.seeder_timeout)
                body.seeder = seeder
                return body
            except errors.RegistryError as e:
                if e.status < 500:
                    raise
                failures.append(f"{seeder}: {e.detail}")
        if failures:
            self.metrics.fallbacks.labels("origin").inc()
            self.traffic.fell_back("origin")
            self.log.warn(
                "no seeder could serve {digest}, fetching from the origin: {why}",
                digest=str(ref.digest),
                why="; ".join(failures),
            )
        url = ref.upstream.blob_url(ref.repository, ref.digest)
        login = None
        if ref.authorization is None and self.credentials is not None:

            def login(challenge):
                return self.credentials.answer(ref.upstream, challenge)

        try:
            return await fetch(url, "origin", login)
        except errors.RegistryError as e:
            if e.status >= 500:
                self.log.warn(
                    "origin {registry} failed for {digest}: {why}",
                    registry=ref.upstream.host,
                    digest=str(ref.digest),
                    why=e.detail,
                )
            raise

    async def _complete(
        self, ref, transfer, body: BlobBody, offset: int, sha256, skip=()
    ):
        throttle = self.limits.http_fetch() if self.limits else None
        try:
            await receive_blob(
                self.reactor,
                body,
                transfer.path,
                offset,
                sha256,
                transfer.advance,
                throttle,
            )
        except BadReply as e:
            if throttle:
                throttle.close()
            if body.seeder is None:
                return self._failed(transfer, e)
            # The seeder went away or fell silent part way: go on from where it
            # stopped with the next seeder, or the origin. Each seeder is tried
            # once, so this ends.
            return await self._next_seeder(ref, transfer, body, offset, sha256, skip, e)
        except Exception as e:
            if throttle:
                throttle.close()
            return self._failed(transfer, e)
        if throttle:
            throttle.close()
        if sha256.hexdigest() != ref.hex:
            return self._failed(transfer, ValueError("blob does not match its digest"))
        # Bytes dropped because the sender ignored our Range crossed the network too.
        self.traffic.add(body.source, transfer.size - offset + body.skip)
        self.log.info(
            "fetched {digest} ({size} bytes) from the {source} over HTTP",
            digest=str(ref.digest),
            size=transfer.size,
            source=body.source,
            offset=offset,
        )
        transfer.succeed(self.cache.commit(ref.hex, transfer.path))

    async def _next_seeder(self, ref, transfer, body, start, sha256, skip, why):
        offset = transfer.available
        self.traffic.add(body.source, offset - start)  # sent before it stopped
        skip = (*skip, body.seeder)
        self.traffic.fell_back("next_seeder")
        self.log.warn(
            "seeder {seeder} stopped sending {digest} at byte {offset} ({why}); "
            "going on from the next",
            seeder=body.seeder,
            digest=transfer.digest,
            offset=offset,
            why=str(why)[:200],
        )
        await self.resume(ref, transfer, offset, sha256, skip)

    def _failed(self, transfer: Transfer, reason: Exception) -> None:
        try:
            os.remove(transfer.path)
        except FileNotFoundError:
            pass
        self.log.warn(
            "fetch of {digest} over HTTP failed: {reason}",
            digest=transfer.digest,
            reason=str(reason) or type(reason).__name__,
        )
        transfer.fail(reason)


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
    metrics = DETACHED  # the daemon sets its own

    def __init__(
        self,
        swarm: Swarm,
        http_source: HTTPSource,
        min_size: int,
        stall_timeout: float = 30,
        stream_window: int = 2,
    ):
        self.swarm = swarm
        self.http_source = http_source
        self.min_size = min_size
        self.stall_timeout = stall_timeout
        self.stream_window = stream_window

    @property
    def cache(self) -> BlobCache:
        return self.http_source.cache

    async def start(self, ref: BlobRef) -> Transfer:
        try:
            metainfo = await self.torrent(ref)
        except errors.RegistryError as e:
            if e.status < 500:
                raise
            self.metrics.fallbacks.labels("no_torrent").inc()
            self.http_source.traffic.fell_back("no_torrent")
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
                    url,
                    headers=request_headers(ref.authorization),
                    timeout=http.seeder_timeout,
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
                failures.append(f"{seeder}: {reason(e)}")
            self.log.warn(
                "seeder failed to give the torrent of {digest}: {why}",
                digest=str(ref.digest),
                why=failures[-1],
            )
        raise errors.upstream_unavailable("seeders", "; ".join(failures) or "none")

    def _download(self, ref: BlobRef, metainfo: Metainfo) -> Transfer:
        return _SwarmDownload(self, ref, metainfo).transfer


class _SwarmDownload:
    """One blob coming through the swarm, finished over HTTP if the swarm fails.

    The swarm fails when libtorrent reports an error, when the blob it assembled
    does not match its digest, when no piece arrives for ``stall_timeout``
    seconds (no seeder or peer delivers, trackers are down, peers stall), or for
    ``BAN_GRACE`` seconds once bans for corrupt data left it without peers. The
    HTTP fetch then continues the same transfer from the verified prefix, so the
    clients already streaming it go on as if nothing happened.
    """

    log = Logger()

    def __init__(self, source: SwarmSource, ref: BlobRef, metainfo: Metainfo):
        self.source = source
        self.swarm = source.swarm
        self.cache = cache = source.cache
        self.ref = ref
        self.metainfo = metainfo
        cache.reserve(metainfo.size)
        path = cache.partial_path(ref.hex)
        self.transfer = Transfer(str(ref.digest), metainfo.size, path, "swarm")
        self.progress = PieceProgress(metainfo.size, metainfo.piece_length)
        self.hasher = _PrefixHasher(path)
        self.over_http = False
        self.hurried = 0  # pieces before this one have a deadline
        reactor = source.http_source.reactor
        self.stall_timeout = source.stall_timeout
        self.waiting = self.stall_timeout  # what the stall timer was last set to
        self.banned = False  # whether a peer was banned for corrupt data
        self.timer = reactor.callLater(self.stall_timeout, self._stalled)
        self.swarm.download(
            metainfo,
            cache.partial,
            self._piece,
            self._finished,
            self._swarm_error,
            on_ban=self._banned,
            resume_data=cache.load_resume(ref.hex),
            on_checked=self._checked,
            on_resume_data=self._save_resume,
        )
        self._hurry()

    # A download that an earlier run of the agent began (and saved resume data
    # for, or left a file that libtorrent's hash check accepts) goes on from
    # the pieces it had; they were not received now, and count as resumed.

    def _checked(self, pieces: list[int]) -> None:
        if self.over_http or self.transfer.ended:
            return
        for piece in pieces:
            self.progress.add(piece)
        length, size = self.metainfo.piece_length, self.metainfo.size
        resumed = sum(min(length, size - p * length) for p in pieces)
        self.source.http_source.traffic.resumed += resumed
        self.log.info(
            "resuming the swarm download of {digest}: {bytes} of {size} bytes there",
            digest=str(self.ref.digest),
            bytes=resumed,
            size=self.metainfo.size,
        )
        self._piece(-1)

    def _save_resume(self, data: bytes) -> None:
        if self.over_http or self.transfer.ended:
            return
        try:
            self.cache.save_resume(self.ref.hex, data)
        except OSError as e:
            self.log.warn(
                "cannot keep resume data of {digest}: {why}",
                digest=str(self.ref.digest),
                why=str(e),
            )

    # Clients read the blob from its start, but rarest-first piece picking fills
    # it in any order. Keeping deadlines on a window of pieces just past the
    # complete prefix (``stream_window`` pieces; 0: none) makes the prefix grow
    # steadily, so clients stream while the swarm works. The window is short:
    # libtorrent fetches deadline pieces from the fastest peer, the seeder, and
    # every host wants the same ones, so a long window has the seeder send most
    # pieces several times (measured at N = 8: 8 pieces, seeder 1.98 S and p50
    # 2.09x S/B; 2 pieces, 1.56 S and 1.69x; first byte 0.7 s either way).

    def _hurry(self) -> None:
        first = self.progress.available // self.metainfo.piece_length
        last = min(first + self.source.stream_window, self.metainfo.num_pieces)
        if last > self.hurried:
            start = max(first, self.hurried)
            self.swarm.hurry(self.metainfo.infohash, list(range(start, last)), 200)
            self.hurried = last

    def _piece(self, piece: int) -> None:
        if self.over_http or self.transfer.ended:
            return
        self._wait(self._timeout())
        available = self.progress.add(piece)
        try:
            self.hasher.advance(available)
        except OSError as e:
            return self._fall_back(str(e), why="swarm_error")
        self.transfer.advance(available)
        self._hurry()

    # libtorrent bans a peer whose data failed the hash checks, but it cannot
    # always tell which of the peers that sent parts of a failed piece lied, and
    # may ban good ones, the seeder included, along with the bad: measured here,
    # in about a third of the runs of tests/test_badpeer.py. So once a peer was
    # banned, a download left without peers waits only BAN_GRACE seconds for a
    # piece (one may still be on its way) before it is finished over HTTP,
    # instead of the whole stall timeout.

    def _banned(self) -> None:
        self.banned = True
        if not (self.over_http or self.transfer.ended or not self.timer.active()):
            # The peer may not be disconnected yet: assume it is.
            self._wait(min(self.waiting, BAN_GRACE))

    def _timeout(self) -> float:
        if self.banned and not self.swarm.connected_peers(self.metainfo.infohash):
            return BAN_GRACE
        return self.stall_timeout

    def _wait(self, seconds: float) -> None:
        self.waiting = seconds
        self.timer.reset(seconds)

    def _swarm_error(self, message: str, no_space: bool) -> None:
        if not no_space:
            return self._fall_back(message, why="swarm_error")
        # HTTP would write the same bytes to the same full disk: give up, and
        # free the space for what else is being fetched.
        if self.over_http or self.transfer.ended:
            return
        self.over_http = True  # no more swarm events for this download
        if self.timer.active():
            self.timer.cancel()
        self.hasher.close()
        self.swarm.remove(self.metainfo.infohash, delete_files=True)
        self.cache.drop_partial(self.ref.hex)
        self.log.warn(
            "swarm download of {digest} failed: disk full ({message})",
            digest=str(self.ref.digest),
            message=message,
        )
        self.transfer.fail(OSError(errno.ENOSPC, "disk full"))

    def _stalled(self) -> None:
        since = " since a peer was banned" if self.banned else ""
        why = "banned" if self.banned else "stalled"
        self._fall_back(f"no progress for {self.waiting}s{since}", why=why)

    def _finished(self) -> None:
        if self.over_http:
            return
        self.timer.cancel()
        Deferred.fromCoroutine(self._commit()).addErrback(
            lambda f: self._fall_back(f.getErrorMessage(), True, "bad_blob")
        )

    async def _commit(self) -> None:
        ref, cache = self.ref, self.cache
        self.hasher.advance(self.metainfo.size)
        if self.hasher.hexdigest() != ref.hex:
            raise ValueError("the swarm's blob does not match its digest")
        await self.swarm.move(self.metainfo.infohash, cache.blobs)
        cache.drop_partial(ref.hex)
        cache.save_torrent(ref.hex, self.metainfo.data)
        cache.committed_in_place(ref.hex)
        received = self._count_swarm_bytes()
        self.log.info(
            "fetched {digest} ({size} bytes) through the swarm: {seeder} bytes "
            "from seeders, {peer} from peers",
            digest=str(ref.digest),
            size=self.metainfo.size,
            seeder=received.get("seeder", 0),
            peer=received.get("peer", 0),
        )
        self.transfer.succeed(cache.blob_path(ref.hex))

    def _count_swarm_bytes(self) -> dict[str, int]:
        received = self.swarm.bytes_by_kind(self.metainfo.infohash)
        traffic = self.source.http_source.traffic
        traffic.resumed += received.pop("resumed", 0)
        for kind, count in received.items():
            traffic.add(kind, count)
        return received

    def _fall_back(self, reason: str, restart: bool = False, why: str = "") -> None:
        if self.over_http or self.transfer.ended:
            return
        self.over_http = True
        self.source.http_source.traffic.fell_back(why)
        if self.timer.active():
            self.timer.cancel()
        offset = 0 if restart else self.progress.available
        self.source.metrics.fallbacks.labels("swarm").inc()
        self.log.warn(
            "swarm download of {digest} failed ({reason}); finishing it over HTTP "
            "from byte {offset}",
            digest=str(self.ref.digest),
            reason=reason,
            fallback=why,
            offset=offset,
        )
        self._count_swarm_bytes()
        self.hasher.close()
        # libtorrent may still write to its file after it lets go of the torrent,
        # so the HTTP fetch continues in a file of its own; readers reopen it.
        old, new = self.transfer.path, self.cache.incoming_path(self.ref.hex, "http")
        try:
            _copy_prefix(old, new, offset)
        except OSError as e:
            self.swarm.remove(self.metainfo.infohash, delete_files=True)
            self.cache.drop_partial(self.ref.hex)
            return self.transfer.fail(e)
        self.swarm.remove(self.metainfo.infohash, delete_files=True)
        self.cache.drop_partial(self.ref.hex)
        self.transfer.path = new
        sha256 = hashlib.sha256() if restart else self.hasher.sha256
        Deferred.fromCoroutine(
            self.source.http_source.resume(self.ref, self.transfer, offset, sha256)
        )
        self.transfer.ended_deferred().addCallback(self._seed).addErrback(
            lambda f: None
        )

    def _seed(self, _) -> None:
        """Serve the blob to the swarm all the same, now that it is here."""
        self.cache.save_torrent(self.ref.hex, self.metainfo.data)
        self.swarm.seed(self.metainfo, self.cache.blobs)


def _copy_prefix(source: str, destination: str, length: int) -> None:
    """Copy the first ``length`` bytes of a file, in the kernel.

    Blocks the reactor for as long as that takes (about a second per GB from the
    page cache); this is the rare fallback path.
    """
    with open(destination, "wb") as dst:
        if not length:
            return
        with open(source, "rb") as src:
            copied = 0
            while copied < length:
                n = os.copy_file_range(src.fileno(), dst.fileno(), length - copied)
                if n == 0:
                    raise OSError(f"{source} is shorter than {length} bytes")
                copied += n


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

    @property
    def sha256(self):
        """The hash object of the prefix hashed so far."""
        return self._sha256

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
