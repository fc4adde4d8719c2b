"""A local Eagle cluster of real ``twist`` processes on loopback: one tracker, one
or more seeders and N agents (or proxies) in front of one origin registry.

Used by the ``eagle demo`` command, the integration tests and the benchmark.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import yaml

from eagle.lab import Service, free_port

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str, timeout: float = 5) -> dict:
    with _direct.open(url, timeout=timeout) as response:
        return json.loads(response.read())


class Daemon(Service):
    """One Eagle daemon: ``twist eagle-<kind> --config <state_dir>/<name>.yaml``.

    Logs are text in ``<name>.log``, or with ``json_logs`` whatever twist writes to
    a standard output that is not a terminal (JSON) in the service's log file.
    """

    json_logs = False

    def __init__(self, state_dir, kind: str, name: str, config: dict, port: int):
        self.name = name
        super().__init__(state_dir)
        self.kind = kind
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.config_path = self.state_dir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))

    def argv(self) -> list[str]:
        twist = Path(sys.executable).with_name("twist")
        logging = [
            "--log-format=text",
            f"--log-file={self.state_dir / (self.name + '.log')}",
        ]
        return [
            str(twist),
            *([] if self.json_logs else logging),
            f"eagle-{self.kind}",
            f"--config={self.config_path}",
        ]

    def ready(self) -> bool:
        try:
            self.status()
            return True
        except OSError:
            return False

    def status(self) -> dict:
        return get_json(self.url + "/eagle/stats")


class Cluster:
    """Tracker, seeders and agents for one origin, each in ``state_dir/<name>``."""

    def __init__(
        self,
        state_dir: str | os.PathLike,
        origin_url: str,
        *,
        agents: int = 3,
        seeders: int = 1,
        kind: str = "agent",
        aliases: tuple[str, ...] = (),
        agent_config: dict | None = None,
        seeder_config: dict | None = None,
        trackers: int = 1,
        tracker_config: dict | None = None,
        registry_options: dict | None = None,
    ):
        """``aliases`` are more registry host names served by the same origin, for
        example ``docker.io`` so that containerd's ``?ns=docker.io`` reaches it;
        ``agent_config`` and ``seeder_config`` add or override config keys."""
        self.state_dir = Path(state_dir)
        host = origin_url.split("://", 1)[1]
        registries = [
            {"host": name, "url": origin_url, **(registry_options or {})}
            for name in (host, *aliases)
        ]
        self.trackers = []
        for i in range(trackers):
            port = free_port()
            config = {"listen": f"tcp:{port}:interface=127.0.0.1", "interval": 5}
            name = "tracker" if i == 0 else f"tracker{i}"
            self.trackers.append(
                Daemon(
                    self.state_dir / name,
                    "tracker",
                    name,
                    {**config, **(tracker_config or {})},
                    port,
                )
            )
        self.tracker = self.trackers[0]
        announce = [f"{t.url}/announce" for t in self.trackers]
        self.seeders = [
            self._node(
                f"seeder{i}", "seeder", registries, announce, [], seeder_config or {}
            )
            for i in range(seeders)
        ]
        seeder_urls = [s.url for s in self.seeders]
        self.agents = [
            self._node(
                f"{kind}{i}",
                kind,
                registries,
                announce,
                seeder_urls,
                agent_config or {},
            )
            for i in range(agents)
        ]

    def _node(self, name, kind, registries, trackers, seeders, extra) -> Daemon:
        port = free_port()
        directory = self.state_dir / name
        config = {
            "listen": f"tcp:{port}:interface=127.0.0.1",
            "data_dir": str(directory / "data"),
            "registries": registries,
            "trackers": trackers,
            "seeders": seeders,
            "default_registry": registries[0]["host"],
            "bittorrent_listen": f"127.0.0.1:{free_port()}",
            **extra,
        }
        return Daemon(directory, kind, name, config, port)

    @property
    def daemons(self) -> list[Daemon]:
        return [*self.trackers, *self.seeders, *self.agents]

    def start(self) -> Cluster:
        try:
            for daemon in self.daemons:
                daemon.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for daemon in reversed(self.daemons):
            daemon.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
