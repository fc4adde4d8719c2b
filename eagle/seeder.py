"""The seeder: fetches each blob from its origin once, keeps it, and is the first
peer of its swarm.

Agents ask a seeder for a blob's torrent; the seeder fetches the blob if it has
not got it (one fetch however many ask), verifies it, makes its deterministic
torrent and starts seeding, then answers. It also serves blobs over HTTP for
eagle-proxy and for agents that fall back.
"""

import secrets

from klein import Klein
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from eagle import digest as names
from eagle import errors
from eagle.blobs import Blobs, HTTPSource, IBlobSource
from eagle.cache import BlobCache
from eagle.mirror import authorization, query, write_error, write_upstream
from eagle.singleflight import SingleFlight
from eagle.storage import Storage, StorageError
from eagle.swarm import Swarm
from eagle.torrent import Metainfo, make_torrent
from eagle.transfer import Transfer
from eagle.upstream import BlobRef, Upstreams

# Seconds to wait before each further attempt to put a blob into storage.
STORE_RETRIES = (2, 10, 30)


class Seeder:
    log = Logger()

    def __init__(
        self, blobs: Blobs, swarm: Swarm, upstreams: Upstreams, hash_in_thread
    ):
        self.blobs = blobs
        self.swarm = swarm
        self.upstreams = upstreams
        self._hash_in_thread = hash_in_thread
        self._making = SingleFlight()

    async def torrent(self, ref: BlobRef) -> bytes:
        """The blob's torrent, fetching the blob first if need be; seeds it."""
        transfer = await self.blobs.open(ref)
        await transfer.ended_deferred()
        cache = self.blobs.cache
        cache.touch(ref.hex)
        data = cache.load_torrent(ref.hex)
        if data is None:
            data = await self._making.run(ref.hex, lambda: self._make(ref.hex))
        self.swarm.seed(Metainfo.parse(data, ref.hex), cache.blobs)
        return data

    async def _make(self, hex_: str) -> bytes:
        cache = self.blobs.cache
        cache.pin(hex_)
        try:
            data = await self._hash_in_thread(make_torrent, cache.blob_path(hex_))
        finally:
            cache.unpin(hex_)
        cache.save_torrent(hex_, data)
        self.log.info("made torrent of {digest}", digest="sha256:" + hex_)
        return data


class SeederAPI:
    """``/torrents/<digest>?ns=<registry>&repository=<name>``: a blob's torrent,
    for clients that may pull the blob (``mirror.check_access``)."""

    app = Klein()

    def __init__(self, seeder: Seeder, mirror):
        self.seeder = seeder
        self.mirror = mirror

    def resource(self):
        return self.app.resource()

    @app.route("/<digest>", methods=["GET"])
    async def torrent(self, request, digest):
        try:
            upstream = self.seeder.upstreams.select(query(request, "ns"))
            repository = query(request, "repository")
            if repository is None:
                raise errors.name_invalid("repository parameter missing")
            ref = BlobRef(
                upstream,
                upstream.repository(names.repository(repository)),
                names.blob_digest(digest),
                authorization(request),
            )
            await self.mirror.check_access(request, ref)
            data = await self.seeder.torrent(ref)
        except errors.RegistryError as e:
            return write_error(request, e)
        except errors.UpstreamAnswer as e:
            return write_upstream(request, e)
        except Exception as e:
            # The fetch failed after it began: the origin cut it short, or the
            # blob did not match its digest. Nothing of it was kept.
            error = errors.upstream_bad_reply("origin", str(e)[:200])
            return write_error(request, error)
        request.setHeader(b"Content-Type", b"application/x-bittorrent")
        return data


@implementer(IBlobSource)
class StoredSource:
    """A seeder's blobs: from its storage, else from the origin and then into the
    storage, so that the cache in front may evict them and seeders sharing the
    storage never fetch them from the origin again.

    The storage is asked first and the origin only if the storage has not got the
    blob or cannot say (it is down: the origin still serves). A blob is pinned in
    the cache until it is in storage, so the cache never drops the only copy.
    """

    log = Logger()

    def __init__(
        self,
        storage: Storage,
        origin: HTTPSource,
        cache: BlobCache,
        reactor,
        retries=STORE_RETRIES,
    ):
        self.storage = storage
        self.origin = origin
        self.cache = cache
        self.reactor = reactor
        self.retries = retries
        self.storing: set[str] = set()

    async def start(self, ref: BlobRef) -> Transfer:
        try:
            size = await self.storage.stat(ref.hex)
        except StorageError as e:
            self.log.warn(
                "storage cannot say if it has {digest} ({why}); asking the origin",
                digest=str(ref.digest),
                why=str(e)[:300],
            )
            size = None
        if size is not None:
            return self._from_storage(ref, size)
        transfer = await self.origin.start(ref)
        transfer.ended_deferred().addCallbacks(
            lambda _: self.keep(ref.hex), lambda _: None
        )
        return transfer

    def _from_storage(self, ref: BlobRef, size: int) -> Transfer:
        cache = self.cache
        cache.reserve(size)
        path = cache.incoming_path(ref.hex, secrets.token_hex(4))
        transfer = Transfer(str(ref.digest), size, path, "storage")
        started = self.reactor.seconds()

        def done(written):
            if written != size:
                raise StorageError(f"storage gave {written} of {size} bytes")
            self.log.info(
                "fetched {digest} ({size} bytes) from storage in {seconds:.2f}s",
                digest=str(ref.digest),
                size=size,
                seconds=self.reactor.seconds() - started,
            )
            transfer.succeed(cache.commit(ref.hex, path))

        def failed(failure):
            # Unverified bytes may have reached readers already: end them all.
            # The next request asks the storage, then the origin, again.
            self.log.warn(
                "fetch of {digest} from storage failed: {why}",
                digest=str(ref.digest),
                why=failure.getErrorMessage()[:300],
            )
            transfer.fail(failure)

        self.storage.fetch(ref.hex, path, transfer.advance).addCallback(
            done
        ).addErrback(failed)
        return transfer

    def keep(self, hex_: str):
        """Put a cached blob into storage, retrying a few times; a Deferred."""
        if hex_ in self.storing:
            return succeed(None)
        self.storing.add(hex_)
        self.cache.pin(hex_)

        def finished(_):
            self.storing.discard(hex_)
            self.cache.unpin(hex_)

        return Deferred.fromCoroutine(self._keep(hex_)).addBoth(finished)

    async def _keep(self, hex_: str) -> None:
        for attempt, delay in enumerate((0, *self.retries)):
            if delay:
                await deferLater(self.reactor, delay, lambda: None)
            try:
                if await self.storage.stat(hex_) is None:
                    await self.storage.store(hex_, self.cache.blob_path(hex_))
                    self.log.info("stored sha256:{hex} in storage", hex=hex_)
                return
            except Exception as e:
                self.log.warn(
                    "storing sha256:{hex} failed (attempt {attempt} of {attempts}):"
                    " {why}",
                    hex=hex_,
                    attempt=attempt + 1,
                    attempts=len(self.retries) + 1,
                    why=str(e)[:300] or type(e).__name__,
                )
        self.log.error(
            "gave up storing sha256:{hex}; it stays in the cache only, and is "
            "stored again when the seeder restarts",
            hex=hex_,
        )

    async def keep_all(self) -> None:
        """Store what the cache holds and the storage lacks, e.g. after a crash
        or a storage outage."""
        for hex_ in self.cache.list():
            await self.keep(hex_)
