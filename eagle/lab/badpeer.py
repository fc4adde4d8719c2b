"""A peer that cannot serve what it announces, to show how agents cope with one.

It announces a blob's swarm to a tracker as a peer with the whole blob, and then,
by ``mode``:

- ``corrupt``: says it has every piece, unchokes, and answers every block request
  at once with random bytes, which fail the hash checks;
- ``stall``: the same, but never answers a request;
- ``gone``: listens nowhere, so connections to the announced address are refused.

It speaks just enough of the BitTorrent wire protocol for a v2 torrent (BEP 3 and
BEP 52): the handshake with the truncated v2 info-hash, a bitfield, unchoke, and
piece messages. Run as a process (``BadPeer`` starts one) that logs one line per
connection, block and announce, so that tests can count what it did.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import libtorrent as lt

from eagle.lab import Service, free_port

PROTOCOL = b"\x13BitTorrent protocol"
# The last reserved byte's 0x10 says "I speak v2" (BEP 52).
RESERVED = bytes([0, 0, 0, 0, 0, 0, 0, 0x10])
HANDSHAKE_LENGTH = len(PROTOCOL) + 8 + 20 + 20
UNCHOKE, BITFIELD, REQUEST, PIECE = 1, 5, 6, 7
MAX_MESSAGE = 1 << 20
MAX_BLOCK = 128 * 1024  # clients ask for 16 KiB
MODES = ("corrupt", "stall", "gone")
# How long the process lives at most, should nobody stop it.
LIFETIME = 600

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- the wire protocol, no I/O ---------------------------------------------------


def handshake(infohash: bytes, peer_id: bytes) -> bytes:
    return PROTOCOL + RESERVED + infohash + peer_id


def message(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", 1 + len(payload), kind) + payload


def bitfield(num_pieces: int) -> bytes:
    """Every piece set; the spare bits of the last byte clear, as BEP 3 demands."""
    data = bytearray(b"\xff" * ((num_pieces + 7) // 8))
    spare = len(data) * 8 - num_pieces
    if spare:
        data[-1] = (0xFF << spare) & 0xFF
    return bytes(data)


def corrupt_piece(request: bytes) -> bytes:
    """The answer to a request message's payload: the block, as random bytes."""
    index, begin, length = struct.unpack(">III", request[:12])
    return message(PIECE, struct.pack(">II", index, begin) + os.urandom(length))


# -- the process -----------------------------------------------------------------


class _Peer:
    def __init__(self, infohash: bytes, num_pieces: int, mode: str):
        self.infohash = infohash
        self.num_pieces = num_pieces
        self.mode = mode
        self.peer_id = b"-XX0001-" + secrets.token_bytes(6).hex().encode()

    def log(self, text: str) -> None:
        print(text, flush=True)

    def serve(self, sock: socket.socket, address) -> None:
        sock.settimeout(120)
        theirs = _read(sock, HANDSHAKE_LENGTH)
        if theirs[:20] != PROTOCOL or theirs[28:48] != self.infohash:
            self.log(f"refused {address}: not our swarm")
            return
        self.log(f"connection from {address[0]}:{address[1]}")
        sock.sendall(handshake(self.infohash, self.peer_id))
        sock.sendall(message(BITFIELD, bitfield(self.num_pieces)) + message(UNCHOKE))
        while True:
            (length,) = struct.unpack(">I", _read(sock, 4))
            if length == 0:
                continue  # keep-alive
            if length > MAX_MESSAGE:
                self.log(f"message of {length} bytes from {address}: closing")
                return
            body = _read(sock, length)
            if body[0] != REQUEST:
                continue  # interested, have, hash requests...: nothing to say
            index, begin, size = struct.unpack(">III", body[1:13])
            if self.mode == "stall" or size > MAX_BLOCK:
                self.log(f"ignored request piece={index} begin={begin}")
                continue
            sock.sendall(corrupt_piece(body[1:]))
            self.log(f"sent corrupt block piece={index} begin={begin} size={size}")

    def announce(self, tracker: str, port: int) -> float:
        """Announce the whole blob; return the interval the tracker asks for."""
        query = urllib.parse.urlencode(
            {
                "info_hash": self.infohash,
                "peer_id": self.peer_id,
                "port": port,
                "uploaded": 0,
                "downloaded": 0,
                "left": 0,
                "event": "started",
                "compact": 1,
            }
        )
        separator = "&" if "?" in tracker else "?"
        with _direct.open(f"{tracker}{separator}{query}", timeout=10) as response:
            reply = lt.bdecode(response.read())
        if b"failure reason" in reply:
            raise RuntimeError(reply[b"failure reason"].decode(errors="replace"))
        self.log(f"announced port {port} to {tracker}")
        return float(reply.get(b"interval", 15))


def _read(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        data += chunk
    return data


def swarm_infohash(torrent: bytes) -> bytes:
    """A v2-only torrent goes by its SHA-256 info-hash cut to 20 bytes, on the
    wire and at the tracker alike."""
    return lt.torrent_info(lt.bdecode(torrent)).info_hashes().v2.to_bytes()[:20]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torrent", required=True, help="the blob's .torrent file")
    parser.add_argument("--tracker", action="append", required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    torrent = Path(args.torrent).read_bytes()
    info = lt.torrent_info(lt.bdecode(torrent))
    peer = _Peer(swarm_infohash(torrent), info.num_pieces(), args.mode)

    if args.mode != "gone":

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                try:
                    peer.serve(self.request, self.client_address)
                except (OSError, struct.error) as e:
                    peer.log(f"connection from {self.client_address} ended: {e}")

        server = socketserver.ThreadingTCPServer(("127.0.0.1", args.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()

    deadline = time.monotonic() + LIFETIME
    while time.monotonic() < deadline:
        interval = 15.0
        for tracker in args.tracker:
            try:
                interval = peer.announce(tracker, args.port)
            except (OSError, RuntimeError) as e:
                peer.log(f"announce to {tracker} failed: {e}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


class BadPeer(Service):
    """The bad peer as a process, announcing ``torrent``'s swarm to ``trackers``."""

    name = "badpeer"

    def __init__(self, state_dir, torrent: bytes, trackers: list[str], mode: str):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        super().__init__(state_dir)
        self.mode = mode
        self.trackers = list(trackers)
        self.port = free_port()  # in "gone" mode, announced and left closed
        self.torrent_path = self.state_dir / "blob.torrent"
        self.torrent_path.write_bytes(torrent)
        self.infohash = swarm_infohash(torrent)

    def argv(self) -> list[str]:
        argv = [sys.executable, "-u", "-m", "eagle.lab.badpeer"]
        argv += ["--torrent", str(self.torrent_path), "--mode", self.mode]
        argv += ["--port", str(self.port)]
        for tracker in self.trackers:
            argv += ["--tracker", tracker]
        return argv

    def ready(self) -> bool:
        return "announced port" in self._log()

    def _log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def count(self, what: str) -> int:
        """Log lines starting with ``what``: "connection from", "sent corrupt
        block", "ignored request"."""
        return sum(line.startswith(what) for line in self._log().splitlines())


if __name__ == "__main__":
    main()
