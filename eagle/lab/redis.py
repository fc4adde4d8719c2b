"""Redis for trackers that share swarms: Debian's redis-server and redis-sentinel
on loopback, as a master, replicas and sentinels that fail over."""

from __future__ import annotations

import socket

from eagle.lab import Service, free_port


def ask(port: int, *command: str, timeout: float = 2) -> bytes:
    """Send one command in Redis's protocol and return the raw reply."""
    parts = [f"*{len(command)}\r\n".encode()]
    for word in command:
        data = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.sendall(b"".join(parts))
        return s.recv(65536)


class _Redis(Service):
    """A Redis process (server or sentinel): ready once it answers PING."""

    port: int

    def ready(self) -> bool:
        try:
            return ask(self.port, "PING").startswith(b"+PONG")
        except OSError:
            return False


class RedisServer(_Redis):
    """``redis-server`` on 127.0.0.1:<free port>, no persistence; a replica of
    ``replica_of`` (a port) if given."""

    name = "redis"

    def __init__(self, state_dir, *, replica_of: int | None = None, name="redis"):
        self.name = name
        super().__init__(state_dir)
        self.port = free_port()
        self.replica_of = replica_of

    def argv(self) -> list[str]:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(self.state_dir), "--save", "", "--appendonly", "no"]
        if self.replica_of:
            argv += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        return argv

    def role(self) -> str:
        """ "master" or "slave", as the server sees itself now."""
        reply = ask(self.port, "ROLE")
        return "master" if b"master" in reply.split(b"\r\n")[2] else "slave"


class RedisSentinel(_Redis):
    """``redis-sentinel`` watching the master at ``master_port`` as ``master``."""

    def __init__(self, state_dir, master_port: int, *, name="sentinel", quorum=2):
        self.name = name
        super().__init__(state_dir)
        self.port = free_port()
        self.config_path = self.state_dir / f"{name}.conf"
        # Sentinel rewrites its config file as it learns: it must be writable.
        self.config_path.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.state_dir}\n"
            f"sentinel monitor eagle 127.0.0.1 {master_port} {quorum}\n"
            "sentinel down-after-milliseconds eagle 1000\n"
            "sentinel failover-timeout eagle 5000\n"
            "sentinel parallel-syncs eagle 1\n"
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return ["redis-sentinel", str(self.config_path)]

    def master_port(self) -> int:
        """The port of the master this sentinel names now."""
        reply = ask(self.port, "SENTINEL", "get-master-addr-by-name", "eagle")
        return int(reply.split(b"\r\n")[4])
