"""This host's place in the blobs' swarms: one libtorrent session, bridged to Twisted.

libtorrent runs its own threads and queues alerts; the reactor drains the queue
every ``DRAIN_EVERY`` seconds. libtorrent could call us when the queue stops being
empty (``set_alert_notify``), but that call comes on libtorrent's thread holding
its alert lock and wanting the GIL, while the reactor thread may hold the GIL and
want that lock (the session's destructor, which resets the notification, does):
daemons hung on SIGTERM that way. Polling an empty queue costs next to nothing.
"""

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

import libtorrent as lt
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from eagle.torrent import Metainfo

AGENT_PEER_ID = "-EA0100-"
SEEDER_PEER_ID = "-ES0100-"
SEEDER_ID = SEEDER_PEER_ID.encode()

ALERTS = (
    lt.alert_category.error
    | lt.alert_category.status
    | lt.alert_category.storage
    | lt.alert_category.piece_progress
    | lt.alert_category.tracker
    | lt.alert_category.block_progress
    # For peer_ban_alert: a peer whose data failed the hash checks is dropped.
    | lt.alert_category.peer
)
BLOCK = 16 * 1024
# How often the reactor takes libtorrent's alerts: often enough that a piece
# reaches a waiting client without noticeable delay.
DRAIN_EVERY = 0.02

# libtorrent's tick while a speed limit is on; see Swarm.set_limits.
LIMITED_TICK_MS = 100


def socket_buffer(rate: int) -> int:
    """A socket buffer of 50 ms at ``rate`` bytes a second, at least 64 KiB."""
    return max(64 * 1024, rate // 20)


# At shutdown, how long to wait for partial downloads' resume data.
SHUTDOWN_SAVE_TIMEOUT = 5


def session_settings(listen: str, peer_id: str, overrides: dict) -> dict:
    """libtorrent settings for hosts on one fast private network.

    The swarm is closed: no DHT, local discovery or port mapping, since info-hashes
    of private images must not leave the network; peers come from our trackers.
    uTP is off because its congestion control holds TCP-speed links far below
    their rate; the high-performance-seed preset lifts the Internet-sized limits.
    """
    settings = lt.high_performance_seed()
    settings.update(
        {
            "listen_interfaces": listen,
            "peer_fingerprint": peer_id,
            "user_agent": "eagle/0.1",
            "alert_mask": int(ALERTS),
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "enable_outgoing_utp": False,
            "enable_incoming_utp": False,
            # Hosts on one network, and test hosts on one loopback address.
            "allow_multiple_connections_per_ip": True,
            # Our trackers may live on loopback or private addresses.
            "ssrf_mitigation": False,
            "min_announce_interval": 2,
            "tracker_completion_timeout": 10,
            "tracker_receive_timeout": 5,
            "stop_tracker_timeout": 1,
            "active_downloads": -1,
            "active_seeds": -1,
            "active_limit": -1,
            "torrent_connect_boost": 50,
            # Byte counts by source come from alerts per 16 KiB block, and a host
            # also gets one per block it uploads: a gigabyte is some 200,000
            # alerts, which must not be dropped while the reactor is busy.
            "alert_queue_size": 1 << 20,
            # Piece suggestions (on in the preset) steer every peer to the pieces
            # in the seeder's read cache, so a lone seeder sends the same pieces
            # again and again: measured, seeder bytes 2.40 -> 1.85 S without them.
            "suggest_mode": 0,
        }
    )
    settings.update(overrides)
    return settings


def blob_trackers(trackers: list[str], hex_: str, size: int) -> list[str]:
    """Announce URLs for one blob's swarm, naming the blob, so that trackers can
    show and log which blob a swarm (an infohash to them) is."""
    extra = urlencode({"digest": "sha256:" + hex_, "size": size})
    return [url + ("&" if "?" in url else "?") + extra for url in trackers]


def _digest(torrent) -> str | None:
    return "sha256:" + torrent.blob if torrent is not None else None


@dataclass
class _Torrent:
    handle: object
    blob: str  # the digest's hex, which is also the torrent's name
    on_piece: Callable[[int], None] | None = None
    on_finished: Callable[[], None] | None = None
    on_error: Callable[[str, bool], None] | None = None
    on_ban: Callable[[], None] | None = None
    # Pieces found on disk when added (resume data, or libtorrent's hash check).
    on_checked: Callable[[list[int]], None] | None = None
    # Until libtorrent has checked what is on disk: None; then those pieces.
    checked: set | None = None
    resumed: bool = False  # added with resume data
    on_resume_data: Callable[[bytes], None] | None = None
    saved: Deferred | None = None  # the resume data asked for at shutdown
    moved: Deferred | None = None
    piece_length: int = 0
    size: int = 0
    received: dict = field(default_factory=lambda: {"seeder": 0, "peer": 0})
    # piece -> block -> (kind of peer that sent it, whether libtorrent said so)
    senders: dict = field(default_factory=dict)
    # Pieces that passed their hash check but may sit in libtorrent's write cache,
    # and those in the flush under way; see Swarm._flush.
    unflushed: list = field(default_factory=list)
    flushing: list | None = None
    finished: bool = False


class Swarm(Service):
    """Adds blobs' torrents to the session to download or seed them."""

    log = Logger()

    def __init__(
        self,
        reactor,
        *,
        listen: str = "127.0.0.1:0",
        peer_id: str = AGENT_PEER_ID,
        trackers: list[str] = (),
        settings: dict | None = None,
        super_seeding: bool = False,
        resume_interval: float = 10,
    ):
        self.super_seeding = super_seeding
        self.resume_interval = resume_interval
        self._resume_timer = None
        # Speed limits (bytes/s, 0: none); see set_limits.
        self._limits = (0, 0, 0, 0)
        # Told when a download starts or ends, to split the host's budget.
        self.downloads_changed: Callable[[], None] = lambda: None
        self._reactor = reactor
        self._settings = session_settings(listen, peer_id, settings or {})
        self.trackers = list(trackers)
        self._torrents: dict[str, _Torrent] = {}
        self.session = None
        self._payload = {"download": 0, "upload": 0}

    def startService(self):
        super().startService()
        self.session = lt.session(self._settings)
        # libtorrent exempts peers on local networks from its rate limits; in a
        # datacenter every peer is local, and the host's limits must hold for all.
        everyone = lt.ip_filter()
        global_class = 1 << lt.session.global_peer_class_id
        everyone.add_rule("0.0.0.0", "255.255.255.255", global_class)
        everyone.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", global_class)
        self.session.set_peer_class_filter(everyone)
        self._drainer = LoopingCall(self._drain)
        self._drainer.clock = self._reactor
        self._drainer.start(DRAIN_EVERY, now=False)
        self.set_limits(*self._limits)
        self._schedule_resume()

    def stopService(self):
        super().stopService()
        if self._resume_timer is not None and self._resume_timer.active():
            self._resume_timer.cancel()
        if self.session is None:
            return None
        # Partial downloads keep what they have: ask for their resume data and
        # wait for it (a few seconds at most) before closing the session.
        saving = [
            self._save_resume(torrent, Deferred())
            for torrent in self._torrents.values()
            if torrent.on_resume_data is not None
        ]
        saving = [d for d in saving if d is not None]
        if not saving:
            self._close()
            return None
        done = DeferredList(saving, consumeErrors=True)
        timeout = self._reactor.callLater(SHUTDOWN_SAVE_TIMEOUT, done.cancel)

        def close(_):
            if timeout.active():
                timeout.cancel()
            self._close()

        return done.addBoth(close)

    def _close(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            self._drainer.stop()
            session.pause()
            for torrent in self._torrents.values():
                session.remove_torrent(torrent.handle)
            self._torrents.clear()

    # Resume data: every ``resume_interval`` seconds, and at shutdown, each
    # partial download's resume data (which pieces it has, flushed to its file
    # first) goes to its owner to keep, so that after a restart, even one after
    # SIGKILL, the download goes on from those pieces. Pieces written after the
    # last save are downloaded again; nothing is trusted beyond what libtorrent
    # reported, and the whole blob's digest is checked at the end in any case.

    def _schedule_resume(self) -> None:
        if self.resume_interval > 0:
            self._resume_timer = self._reactor.callLater(
                self.resume_interval, self._save_all_resume
            )

    def _save_all_resume(self) -> None:
        if self.session is None:
            return
        for torrent in self._torrents.values():
            if torrent.on_resume_data is not None and not torrent.finished:
                if torrent.handle.need_save_resume_data():
                    self._save_resume(torrent, None)
        self._schedule_resume()

    def _save_resume(self, torrent: _Torrent, saved: Deferred | None):
        if torrent.finished:
            return None
        if saved is not None:
            torrent.saved = saved
        try:
            torrent.handle.save_resume_data(lt.save_resume_flags_t.flush_disk_cache)
        except RuntimeError:  # the torrent is already gone
            return None
        return saved

    def _on_save_resume_data_alert(self, alert) -> None:
        torrent = self._torrent_of(alert)
        if torrent is None:
            return
        if torrent.on_resume_data is not None and not torrent.finished:
            torrent.on_resume_data(lt.write_resume_data_buf(alert.params))
        self._saved(torrent)

    def _on_save_resume_data_failed_alert(self, alert) -> None:
        torrent = self._torrent_of(alert)
        if torrent is not None:
            self._saved(torrent)

    def _saved(self, torrent: _Torrent) -> None:
        if torrent.saved is not None:
            saved, torrent.saved = torrent.saved, None
            saved.callback(None)

    def _on_torrent_checked_alert(self, alert) -> None:
        torrent = self._torrent_of(alert)
        if torrent is None or torrent.on_piece is None or torrent.checked is not None:
            return
        pieces = torrent.handle.status(lt.status_flags_t.query_pieces).pieces
        have = [i for i, done in enumerate(pieces) if done]
        torrent.checked = set(have)
        torrent.handle.resume()  # added to stop when checked: see download()
        if have and torrent.on_checked:
            torrent.on_checked(have)
        if have and len(have) == len(pieces):
            # Complete already (it was when we crashed): no piece will finish.
            torrent.finished = True
            self._flush(torrent)

    @property
    def listen_port(self) -> int:
        return self.session.listen_port()

    def _drain(self) -> None:
        if self.session is None:
            return
        for alert in self.session.pop_alerts():
            handler = getattr(self, "_on_" + type(alert).__name__, None)
            if handler is not None:
                try:
                    handler(alert)
                except Exception:
                    self.log.failure("handling {alert}", alert=type(alert).__name__)

    def _torrent_of(self, alert) -> _Torrent | None:
        try:
            return self._torrents.get(str(alert.handle.info_hashes().v2))
        except RuntimeError:  # the handle's torrent is already gone
            return None

    # A finished piece has passed its hash check, but libtorrent may still hold it
    # in its write cache: the file does not have it yet. Readers of the file learn
    # of pieces only once a flush that began after the piece finished has ended.
    # Flushes are batched: pieces that finish during one wait for the next.

    def _on_piece_finished_alert(self, alert) -> None:
        torrent = self._torrent_of(alert)
        if torrent and torrent.on_piece:
            # libtorrent reports the pieces it finds on disk as finished too;
            # they come once, with the check, and were not received now.
            if torrent.checked is None or alert.piece_index in torrent.checked:
                return
            self._count_piece(torrent, alert.piece_index)
            torrent.unflushed.append(alert.piece_index)
            self._flush(torrent)

    def _on_torrent_finished_alert(self, alert) -> None:
        torrent = self._torrent_of(alert)
        if torrent and torrent.on_finished:
            torrent.finished = True
            self._flush(torrent)
            self.downloads_changed()

    def _flush(self, torrent: _Torrent) -> None:
        if torrent.flushing is None and (torrent.unflushed or torrent.finished):
            torrent.flushing, torrent.unflushed = torrent.unflushed, []
            torrent.handle.flush_cache()

    def _on_cache_flushed_alert(self, alert) -> None:
        torrent = self._torrent_of(alert)
        if torrent is None or torrent.flushing is None:
            return
        flushed, torrent.flushing = torrent.flushing, None
        for piece in flushed:
            torrent.on_piece(piece)
        if torrent.unflushed:
            self._flush(torrent)
        elif torrent.finished and torrent.on_finished:
            on_finished, torrent.on_finished = torrent.on_finished, None
            on_finished()

    # Who sent what. libtorrent reports every block it requests, with the peer
    # (block_downloading), but not every block it receives: whole pieces come
    # without a block_finished alert. So each block is put down to the peer it
    # was last requested from, or the one that finished it when we are told, and
    # counted once its piece has passed its hash check: the counts add up to the
    # blob, and survive peers disconnecting, as seeds do from each other.

    def _on_block_downloading_alert(self, alert) -> None:
        self._sender(alert, final=False)

    def _on_block_finished_alert(self, alert) -> None:
        self._sender(alert, final=True)

    def _sender(self, alert, final: bool) -> None:
        torrent = self._torrent_of(alert)
        if torrent is None or not torrent.piece_length:
            return
        blocks = torrent.senders.setdefault(alert.piece_index, {})
        if final or not blocks.get(alert.block_index, ("", False))[1]:
            kind = "seeder" if alert.pid.to_bytes().startswith(SEEDER_ID) else "peer"
            blocks[alert.block_index] = (kind, final)

    def _count_piece(self, torrent: _Torrent, piece: int) -> None:
        blocks = torrent.senders.pop(piece, {})
        start = piece * torrent.piece_length
        end = min(start + torrent.piece_length, torrent.size)
        # Every block we ask for is reported, so one nobody was asked for was in
        # the file already: part of a piece the resume data lists as unfinished.
        unasked = "resumed" if torrent.resumed else "peer"
        for offset in range(start, end, BLOCK):
            kind, _ = blocks.get((offset - start) // BLOCK, (unasked, False))
            torrent.received[kind] = torrent.received.get(kind, 0) + min(
                BLOCK, end - offset
            )

    def _on_torrent_error_alert(self, alert) -> None:
        self._error(alert)

    def _on_file_error_alert(self, alert) -> None:
        self._error(alert)

    def _error(self, alert) -> None:
        torrent = self._torrent_of(alert)
        if torrent is None or torrent.on_error is None:
            return  # told already: libtorrent reports each failed write
        self.log.warn(
            "swarm error: {message}", message=alert.message(), digest=_digest(torrent)
        )
        on_error, torrent.on_error = torrent.on_error, None
        on_error(alert.message(), _no_space(alert))

    def _on_storage_moved_alert(self, alert) -> None:
        torrent = self._torrent_of(alert)
        if torrent and torrent.moved:
            moved, torrent.moved = torrent.moved, None
            moved.callback(alert.storage_path)

    def _on_storage_moved_failed_alert(self, alert) -> None:
        torrent = self._torrent_of(alert)
        if torrent and torrent.moved:
            moved, torrent.moved = torrent.moved, None
            moved.errback(OSError(alert.message()))

    # Where the session really listens: libtorrent takes the next port when the
    # configured one is taken, and peers learn the real one from announces.
    def _on_listen_succeeded_alert(self, alert) -> None:
        if alert.socket_type == lt.socket_type_t.tcp:
            self.log.info(
                "swarm session listening on {address}:{port}",
                address=alert.address,
                port=alert.port,
            )

    def _on_listen_failed_alert(self, alert) -> None:
        self.log.warn("swarm session cannot listen: {message}", message=alert.message())

    def _on_alerts_dropped_alert(self, alert) -> None:
        self.log.warn("libtorrent dropped alerts: byte counts are now short")

    def _on_hash_failed_alert(self, alert) -> None:
        self.log.warn("piece failed its hash check: {message}", message=alert.message())

    def _on_peer_ban_alert(self, alert) -> None:
        self.log.warn("banned peer: {message}", message=alert.message())
        torrent = self._torrent_of(alert)
        if torrent and torrent.on_ban:
            torrent.on_ban()

    def _on_tracker_error_alert(self, alert) -> None:
        self.log.debug("tracker error: {message}", message=alert.message())

    def counts(self) -> dict[str, int]:
        """How many torrents the session holds: seeding, and downloading."""
        downloading = sum(
            1 for t in self._torrents.values() if t.on_piece and not t.finished
        )
        return {
            "seeding": len(self._torrents) - downloading,
            "downloading": downloading,
        }

    def set_limits(
        self, download: int, upload: int, blob_download: int, blob_upload: int
    ) -> None:
        """Limit the session's peer traffic, and each blob's (bytes/s, 0: none;
        then what the ``libtorrent`` settings say, if they say anything)."""
        self._limits = (download, upload, blob_download, blob_upload)
        if self.session is None:
            return
        base = self._settings
        settings = {
            "download_rate_limit": download or base.get("download_rate_limit", 0),
            "upload_rate_limit": upload or base.get("upload_rate_limit", 0),
            # libtorrent hands out quota each tick, and the kernel's socket
            # buffers (autotuned to megabytes) let the wire run ahead of it:
            # measured at 10 MiB/s, 1 s rates up to 2.8x the limit. Under a
            # limit, finer ticks and socket buffers of 50 ms of it hold the
            # wire close to the limit; without, the usual ones.
            "tick_interval": LIMITED_TICK_MS
            if download or upload
            else base.get("tick_interval", 500),
            "recv_socket_buffer_size": socket_buffer(download)
            if download
            else base.get("recv_socket_buffer_size", 0),
            "send_socket_buffer_size": socket_buffer(upload)
            if upload
            else base.get("send_socket_buffer_size", 0),
        }
        self.session.apply_settings(settings)
        for torrent in self._torrents.values():
            self._limit(torrent)

    def _limit(self, torrent: _Torrent) -> None:
        _, _, blob_download, blob_upload = self._limits
        try:
            torrent.handle.set_download_limit(blob_download or -1)
            torrent.handle.set_upload_limit(blob_upload or -1)
        except RuntimeError:  # the torrent is already gone
            pass

    def has(self, infohash: str) -> bool:
        return infohash in self._torrents

    def _add(
        self, metainfo: Metainfo, directory: str, flags, resume_data: bytes = b""
    ) -> _Torrent:
        resumed = _resume_params(resume_data, metainfo)
        params = resumed or lt.add_torrent_params()
        params.ti = lt.torrent_info(lt.bdecode(metainfo.data))
        params.save_path = directory
        params.trackers = blob_trackers(self.trackers, params.ti.name(), metainfo.size)
        params.tracker_tiers = [0] * len(self.trackers)
        # No peer exchange either: peers come from our trackers only, which
        # decide who meets whom (nearest first, zones through gateways).
        params.flags = flags | lt.torrent_flags.disable_pex
        torrent = _Torrent(
            handle=self.session.add_torrent(params),
            blob=params.ti.name(),
            resumed=resumed is not None,
        )
        self._torrents[metainfo.infohash] = torrent
        self.log.info(
            "joined swarm {infohash} of {digest} to {action}",
            infohash=metainfo.infohash[:40],  # as trackers see it (20 bytes)
            digest=_digest(torrent),
            action="seed" if flags & lt.torrent_flags.seed_mode else "download",
        )
        self._limit(torrent)
        return torrent

    def seed(self, metainfo: Metainfo, directory: str) -> None:
        """Seed a verified blob that lies in ``directory``."""
        if metainfo.infohash in self._torrents:
            return
        # seed_mode trusts the file (it was verified against its digest) and checks
        # each piece's hash lazily, on its first upload.
        flags = lt.torrent_flags.seed_mode
        if self.super_seeding:
            flags |= lt.torrent_flags.super_seeding
        self._add(metainfo, directory, flags)

    def download(
        self,
        metainfo: Metainfo,
        directory: str,
        on_piece: Callable[[int], None],
        on_finished: Callable[[], None],
        on_error: Callable[[str, bool], None],
        on_ban: Callable[[], None] | None = None,
        *,
        resume_data: bytes = b"",
        on_checked: Callable[[list[int]], None] | None = None,
        on_resume_data: Callable[[bytes], None] | None = None,
    ) -> None:
        """Download a blob into ``directory``, reporting each piece once it is in
        the file, the end once every piece is, the first error (and whether
        the disk is full), and each peer banned for data that failed the hash
        checks.

        With ``resume_data`` from an earlier ``on_resume_data``, the pieces it
        lists are taken as there; without it, a file already in ``directory``
        is hash-checked piece by piece. Either way ``on_checked`` is told the
        pieces found, before any other piece is reported."""
        # With something on disk, libtorrent stops once it has checked it, so
        # that the pieces we read then are the ones found, not ones downloaded
        # since (the reactor takes alerts a little later); we go on from there.
        name = lt.torrent_info(lt.bdecode(metainfo.data)).name()
        on_disk = bool(resume_data) or os.path.exists(os.path.join(directory, name))
        flags = lt.torrent_flags.update_subscribe
        if on_disk:
            flags |= lt.torrent_flags.stop_when_ready
        torrent = self._add(metainfo, directory, flags, resume_data)
        if not on_disk:
            torrent.checked = set()  # nothing there: nothing to go on from
        torrent.piece_length = metainfo.piece_length
        torrent.size = metainfo.size
        torrent.on_piece = on_piece
        torrent.on_finished = on_finished
        torrent.on_error = on_error
        torrent.on_ban = on_ban
        torrent.on_checked = on_checked
        torrent.on_resume_data = on_resume_data
        self.downloads_changed()

    def move(self, infohash: str, directory: str) -> Deferred:
        """Move a torrent's file to ``directory``; it keeps seeding from there."""
        torrent = self._torrents[infohash]
        torrent.on_resume_data = None  # complete: nothing to resume any more
        torrent.moved = Deferred()
        torrent.handle.move_storage(directory, lt.move_flags_t.always_replace_files)
        return torrent.moved

    def remove(self, infohash: str, delete_files: bool = False) -> None:
        torrent = self._torrents.pop(infohash, None)
        if torrent is not None and self.session is not None:
            options = lt.options_t.delete_files if delete_files else 0
            self.session.remove_torrent(torrent.handle, options)
            if torrent.on_piece and not torrent.finished:
                self.downloads_changed()

    def hurry(self, infohash: str, pieces: list[int], step_ms: int) -> None:
        """Ask for ``pieces`` first, in order: libtorrent requests pieces with a
        deadline from the fastest peers, the first due now and each next one
        ``step_ms`` later; the rest of the torrent still goes rarest first."""
        torrent = self._torrents.get(infohash)
        if torrent is not None:
            for i, piece in enumerate(pieces):
                torrent.handle.set_piece_deadline(piece, i * step_ms)

    def remove_blob(self, blob: str) -> None:
        """Stop seeding a blob, e.g. because the cache evicted it."""
        for infohash, torrent in list(self._torrents.items()):
            if torrent.blob == blob:
                self.remove(infohash)

    def uploading(self, blob: str) -> bool:
        """Whether a peer that lacks the blob is connected to us for it: it may
        be downloading from us, so the blob must stay."""
        for torrent in self._torrents.values():
            if torrent.blob == blob and self.session is not None:
                status = torrent.handle.status()
                if status.num_peers > status.num_seeds:
                    return True
        return False

    def connected_peers(self, infohash: str) -> int:
        """How many peers (seeders included) a torrent is connected to now."""
        torrent = self._torrents.get(infohash)
        return torrent.handle.status().num_peers if torrent else 0

    def bytes_by_kind(self, infohash: str) -> dict[str, int]:
        """Payload bytes received for a torrent, by the kind of peer that sent
        them; ``resumed``: blocks of unfinished pieces that were in the file."""
        torrent = self._torrents.get(infohash)
        return dict(torrent.received) if torrent else {"seeder": 0, "peer": 0}

    def status(self) -> list[dict]:
        """Each blob in the session: state, progress, peers and rates, for
        status pages and metrics."""
        blobs = []
        for infohash, torrent in list(self._torrents.items()):
            status = torrent.handle.status()
            blobs.append(
                {
                    "digest": "sha256:" + torrent.blob,
                    "infohash": infohash[:40],
                    "state": "seeding" if status.is_seeding else "downloading",
                    "progress": status.progress,
                    "peers": status.num_peers,
                    "download_rate": status.download_payload_rate,
                    "upload_rate": status.upload_payload_rate,
                }
            )
        return blobs

    def payload_totals(self) -> dict[str, int]:
        """Blob bytes this session moved since it started, by direction, as of
        the last stats libtorrent posted; asks for fresh ones for the next call.

        Not session.status(), which blocks the reactor until libtorrent's thread
        answers."""
        if self.session is not None:
            self.session.post_session_stats()
        return dict(self._payload)

    def _on_session_stats_alert(self, alert) -> None:
        values = alert.values
        self._payload = {
            "download": values.get("net.recv_payload_bytes", 0),
            "upload": values.get("net.sent_payload_bytes", 0),
        }


def _no_space(alert) -> bool:
    """Whether an error alert says the disk is full."""
    error = getattr(alert, "error", None)
    return error is not None and error.value() in (errno.ENOSPC, errno.EDQUOT)


def _resume_params(resume_data: bytes, metainfo: Metainfo):
    """The add_torrent_params in resume data, if it is this torrent's."""
    if not resume_data:
        return None
    try:
        params = lt.read_resume_data(resume_data)
    except Exception:  # unreadable: start from a hash check of the file
        return None
    if str(params.info_hashes.v2) != metainfo.infohash:
        return None
    return params
