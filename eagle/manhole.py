"""An optional Python shell inside a running daemon, over SSH, for live debugging.

Off unless the daemon's config has a ``manhole`` section. It listens on loopback
only and lets in only the SSH keys in its ``authorized_keys`` file (no passwords):
an operator on the host reaches it with ``ssh -p <port> eagle@127.0.0.1``, or
from afar through an SSH tunnel to the host. Whoever gets in can do anything the
daemon can, so treat the keys like root's.
"""

from __future__ import annotations

import os
import struct

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.application import strports
from twisted.conch import manhole, manhole_ssh
from twisted.conch.checkers import InMemorySSHKeyDB, SSHPublicKeyChecker
from twisted.conch.insults import insults
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import keys
from twisted.cred import portal
from twisted.logger import Logger

from eagle.config import ConfigError

log = Logger()


def authorized_keys(path: str) -> list[keys.Key]:
    """The public keys in an OpenSSH ``authorized_keys`` file (comments and blank
    lines skipped; a line that is not a key is an error, not ignored)."""
    found = []
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith(b"#"):
                continue
            try:
                found.append(keys.Key.fromString(line))
            except (keys.BadKeyError, ValueError) as e:
                raise ValueError(f"{path}:{number}: not a public key ({e})") from None
    if not found:
        raise ValueError(f"{path}: no public keys")
    return found


def host_key(path: str) -> keys.Key:
    """The manhole's SSH host key, made (Ed25519) on first use and kept."""
    if not os.path.exists(path):
        key = keys.Key(ed25519.Ed25519PrivateKey.generate())
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as f:
            f.write(key.toString("OPENSSH"))
        log.info("made manhole host key {path}", path=path)
    return keys.Key.fromFile(path)


class _Session(manhole_ssh.TerminalSession):
    """Conch's terminal session, which fails on two things clients do: the end of
    their input (``echo 'len(cache.list())' | ssh -tt ...``) now ends the shell,
    and a resized window resizes the shell's terminal."""

    def openShell(self, proto):
        self._proto = proto
        self._transport = self.transportFactory(
            proto,
            self.chainedProtocolFactory(),
            IConchUser(self.original),
            self.width,
            self.height,
        )

    def eofReceived(self):
        session = self._proto.session
        session.conn.sendRequest(session, b"exit-status", struct.pack(">L", 0))
        self._proto.loseConnection()

    def windowChanged(self, size):
        rows, columns = size[:2]
        self._transport.chainedProtocol.terminalProtocol.terminalSize(columns, rows)


def service(cfg, namespace: dict):
    """The manhole as a service for the daemon's tree; ``cfg`` is a
    ``config.ManholeConfig``, ``namespace`` the names the shell starts with."""
    realm = manhole_ssh.TerminalRealm()
    realm.sessionFactory = _Session

    def shell():
        return insults.ServerProtocol(manhole.ColoredManhole, dict(namespace))

    realm.chainedProtocolFactory = shell
    try:
        allowed = authorized_keys(cfg.authorized_keys)
        key = host_key(cfg.host_key)
    except (OSError, ValueError, keys.BadKeyError) as e:
        raise ConfigError(f"manhole: {e}") from None
    database = InMemorySSHKeyDB({cfg.user.encode(): allowed})
    factory = manhole_ssh.ConchFactory(
        portal.Portal(realm, [SSHPublicKeyChecker(database)])
    )
    # Per instance: the class attributes are shared by every ConchFactory.
    factory.publicKeys = {key.sshType(): key.public()}
    factory.privateKeys = {key.sshType(): key}
    log.info(
        "manhole on 127.0.0.1:{port} for {user}, keys in {keys}",
        port=cfg.port,
        user=cfg.user,
        keys=cfg.authorized_keys,
    )
    return strports.service(f"tcp:{cfg.port}:interface=127.0.0.1", factory)
