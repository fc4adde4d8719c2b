"""The seeder: fetches each blob from its origin once, keeps it, and is the first
peer of its swarm.

Agents ask a seeder for a blob's torrent; the seeder fetches the blob if it has
not got it (one fetch however many ask), verifies it, makes its deterministic
torrent and starts seeding, then answers. It also serves blobs over HTTP for
eagle-proxy and for agents that fall back.
"""

from klein import Klein
from twisted.logger import Logger

from eagle import digest as names
from eagle import errors
from eagle.blobs import Blobs
from eagle.mirror import authorization, query, write_error, write_upstream
from eagle.singleflight import SingleFlight
from eagle.swarm import Swarm
from eagle.torrent import Metainfo, make_torrent
from eagle.upstream import BlobRef, Upstreams


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
