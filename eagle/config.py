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
    that may pull with them. ``ca_file`` is a PEM file of the CA certificates
    that sign this registry's certificate (a private CA): they, and not the
    system's CAs, are trusted for it. ``tls_verify: false`` accepts any
    certificate from this registry; it is for lab setups and logged as a warning.
    """

    host: str
    url: str
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    tls_verify: bool = True
    ca_file: str | None = None

    def __post_init__(self):
        if self.ca_file is not None and not self.tls_verify:
            raise ValueError(
                f"registry {self.host}: ca_file and tls_verify: false contradict "
                "each other"
            )

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
class S3Config:
    """An S3 bucket (AWS or any S3-compatible server) that seeders keep blobs in.

    Without ``access_key_id``, boto3 finds credentials its usual way (environment,
    instance profile). Blobs above ``multipart_threshold`` (at least 5 MiB) go up
    in parts of that size.
    """

    bucket: str
    endpoint_url: str | None = None  # None: AWS itself
    region: str = "us-east-1"
    prefix: str = ""  # keys are <prefix>blobs/sha256/<hex>
    access_key_id: str | None = None
    secret_access_key: str | None = None
    secret_access_key_file: str | None = None
    multipart_threshold: ByteSize = ByteSize(16 * 1024**2)
    timeout: float = 30  # seconds, for each request to S3

    def secret(self) -> str | None:
        if self.secret_access_key_file:
            with open(self.secret_access_key_file) as f:
                return f.read().strip()
        return self.secret_access_key


STORAGE_BACKENDS = ("filesystem", "s3")


@dataclass
class StorageConfig:
    """Where a seeder keeps blobs for good, behind its cache (``data_dir``).

    ``filesystem`` keeps them under ``directory``; ``s3`` in the ``s3`` bucket,
    which several seeders may share.
    """

    backend: str = "filesystem"
    directory: str | None = None
    s3: S3Config | None = None
    threads: int = 8  # blocking storage calls run in this many threads

    def __post_init__(self):
        if self.backend not in STORAGE_BACKENDS:
            raise ValueError(
                f"storage backend {self.backend!r} is not one of "
                + ", ".join(STORAGE_BACKENDS)
            )
        if self.backend == "filesystem" and not self.directory:
            raise ValueError("the filesystem storage backend needs a directory")
        if self.backend == "s3" and self.s3 is None:
            raise ValueError("the s3 storage backend needs an s3 section")
        if self.threads < 1:
            raise ValueError("storage threads must be at least 1")


@dataclass
class NodeConfig:
    """An agent, proxy or seeder: the parts that hold blobs."""

    listen: str = "tcp:5050:interface=127.0.0.1"
    data_dir: str = "/var/lib/eagle"
    cache_size: ByteSize = ByteSize(10 * 1024**3)
    registries: list[Registry] = field(default_factory=list)
    default_registry: str | None = None
    # Agents and proxies: a blob's seeder is chosen among these by rendezvous
    # hashing on its digest; one that is down, or silent for seeder_timeout
    # seconds, is skipped for the next. A seeder fetches a blob before it hands
    # out its torrent: leave it time for the origin.
    seeders: list[str] = field(default_factory=list)
    seeder_timeout: float = 30
    trackers: list[str] = field(default_factory=list)
    bittorrent_listen: str = "0.0.0.0:6881"
    labels: dict[str, str] = field(default_factory=dict)
    # Blobs smaller than this come over HTTP: a swarm costs more than it saves.
    swarm_min_size: ByteSize = ByteSize(1024 * 1024)
    # A swarm download that gets no piece for this long is finished over HTTP.
    swarm_timeout: float = 30
    # Pieces just past what a client has, asked for first so that it streams
    # (0: pure rarest-first, which spreads pieces best but streams late; more:
    # the seeder sends the same pieces to several hosts).
    stream_window: int = 2
    # Seconds between saves of partial swarm downloads' resume data (also saved
    # at shutdown), from which they go on after a restart; 0: only at shutdown.
    resume_interval: float = 10
    tracker_token: str | None = None  # the trackers' announce_token
    # Seeders: offer each piece to one peer at a time until others have it
    # (BEP 16), so that peers trade pieces instead of the seeder sending twice.
    super_seeding: bool = False
    # /admin/ (eagle cache ...) for clients with this Bearer token; unset: for
    # loopback clients only.
    admin_token: str | None = None
    libtorrent: dict = field(default_factory=dict)
    # Speed limits for all of the host's traffic, in bytes a second (0: none);
    # also set at runtime with PUT /eagle/limits. Downloads: the swarm and HTTP
    # fetches together; uploads: the swarm. blob_*: each blob's own limit.
    download_limit: ByteSize = ByteSize(0)
    upload_limit: ByteSize = ByteSize(0)
    blob_download_limit: ByteSize = ByteSize(0)
    blob_upload_limit: ByteSize = ByteSize(0)
    # Seeders: keep blobs here for good; the cache (cache_size) sits in front.
    # None: the cache is all there is, and evicted blobs come from the origin.
    storage: StorageConfig | None = None
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
