"""Daemon configuration: YAML files read into dataclasses, with clear errors.

Every key has a default that suits one host running the demo; a config file names
only what differs. Unknown keys are errors, so that a typo is not silently ignored.
"""

import re
from dataclasses import dataclass, field

import dacite
import yaml


class ByteSize(int):
    """A size in bytes, written in YAML as a number or as ``512MiB``, ``10GB``..."""


_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_size(value) -> ByteSize:
    # YAML reads "yes" and "true" as booleans, which are ints to Python.
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"not a size: {value!r}")
        return ByteSize(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*", str(value).lower())
    if not match:
        raise ValueError(f"not a size: {value!r}")
    number, unit, binary = match.groups()
    base = 1024 ** "_kmgt".index(unit) if binary and unit else _UNITS[unit]
    return ByteSize(int(float(number) * base))


@dataclass
class Registry:
    """An origin registry: ``host`` as clients name it (``ns``), ``url`` to reach it.

    ``username`` and ``password`` (or ``password_file``) are used when a client
    sends no credentials of its own: always by seeders, by agents for hosts
    that may pull with them. ``tls_verify: false`` accepts any certificate from
    this registry; it is for lab setups and logged as a warning.
    """

    host: str
    url: str
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    tls_verify: bool = True

    def secret(self) -> str | None:
        if self.password_file:
            with open(self.password_file) as f:
                return f.read().strip()
        return self.password


@dataclass
class RedisConfig:
    """Where trackers share swarms: one Redis (``url``), or the master that Redis
    Sentinel names (``sentinels`` as host:port, and the ``master`` name)."""

    url: str | None = None  # redis://[:password@]host:port[/db]
    sentinels: list[str] = field(default_factory=list)
    master: str = "eagle"
    password: str | None = None
    db: int = 0


@dataclass
class ManholeConfig:
    """A Python shell inside the daemon over SSH, on 127.0.0.1:``port`` only, for
    ``user`` with a key in ``authorized_keys`` (no passwords). ``host_key`` is
    the server's private key, made on first start when the file is missing."""

    port: int
    authorized_keys: str
    host_key: str
    user: str = "eagle"

    def __post_init__(self):
        if not 0 < self.port < 65536:
            raise ValueError(f"manhole port {self.port} is not between 1 and 65535")


@dataclass
class TrackerConfig:
    listen: str = "tcp:7070:interface=127.0.0.1"
    interval: int = 15  # seconds between a peer's announces
    # Only announces carrying ?token=<this> are accepted (agents: tracker_token).
    announce_token: str | None = None
    redis: RedisConfig | None = None  # None: swarms in memory, for one tracker
    manhole: ManholeConfig | None = None  # None: no manhole


@dataclass
class NodeConfig:
    """An agent, proxy or seeder: the parts that hold blobs."""

    listen: str = "tcp:5050:interface=127.0.0.1"
    data_dir: str = "/var/lib/eagle"
    cache_size: ByteSize = ByteSize(10 * 1024**3)
    registries: list[Registry] = field(default_factory=list)
    default_registry: str | None = None
    seeders: list[str] = field(default_factory=list)
    trackers: list[str] = field(default_factory=list)
    bittorrent_listen: str = "0.0.0.0:6881"
    labels: dict[str, str] = field(default_factory=dict)
    # Blobs smaller than this come over HTTP: a swarm costs more than it saves.
    swarm_min_size: ByteSize = ByteSize(1024 * 1024)
    # A swarm download that gets no piece for this long is finished over HTTP.
    swarm_timeout: float = 30
    # Pieces just past what a client has, asked for first so that it streams
    # (0: pure rarest-first, which spreads pieces best but streams late).
    stream_window: int = 8
    tracker_token: str | None = None  # the trackers' announce_token
    # Seeders: offer each piece to one peer at a time until others have it
    # (BEP 16), so that peers trade pieces instead of the seeder sending twice.
    super_seeding: bool = False
    # /admin/ (eagle cache ...) for clients with this Bearer token; unset: for
    # loopback clients only.
    admin_token: str | None = None
    libtorrent: dict = field(default_factory=dict)
    manhole: ManholeConfig | None = None  # None: no manhole


class ConfigError(ValueError):
    pass


def load(path: str, kind: type):
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None
    return from_dict(data, kind, path)


def from_dict(data: dict, kind: type, where: str = "config"):
    if not isinstance(data, dict):
        # A list or a bare string at the top: most likely not our config file.
        raise ConfigError(f"{where}: expected a mapping of settings")
    try:
        return dacite.from_dict(
            kind,
            data,
            dacite.Config(strict=True, type_hooks={ByteSize: parse_size}),
        )
    except (dacite.DaciteError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None
