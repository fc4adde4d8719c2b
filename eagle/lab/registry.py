"""The origin: Debian's ``docker-registry`` (Docker Distribution 2.8) on loopback.

The registry logs one JSON record per request to its log file, for example::

    {"http.request.method":"GET","http.request.uri":"/v2/demo/blobs/sha256:ab..",
     "http.response.status":200,"http.response.written":2817,
     "msg":"response completed",...}

(followed by an Apache-style access log line, which `requests` ignores). Tests read
those records to check how often the origin served each blob.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
import warnings
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from eagle.lab import LabError, Service, free_port

BLOB_PATH = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[a-z0-9]+:[0-9a-f]+)$")
SERVED = (200, 206)
#: The cheapest bcrypt cost: the registry checks the hash on every request.
BCRYPT_COST = 4

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Request(NamedTuple):
    """One request the registry answered, as its log records it."""

    method: str
    path: str
    status: int
    written: int


class Registry(Service):
    """``docker-registry serve`` on 127.0.0.1:<free port>, storing blobs on disk.

    ``auth`` ({"user": .., "password": ..}) turns on htpasswd basic auth;
    ``auth_config`` is any other ``auth`` section, e.g. token authentication
    with `eagle.lab.tokens.TokenServer`; ``notifications`` is a URL the registry
    POSTs its push/pull events to.
    """

    name = "registry"
    opener = _direct  # how the lab reaches it: plain HTTP, no proxies

    def __init__(
        self,
        state_dir: str | os.PathLike,
        *,
        storage_dir: str | os.PathLike | None = None,
        auth: dict[str, str] | None = None,
        notifications: str | None = None,
        auth_config: dict | None = None,
    ):
        super().__init__(state_dir)
        self.auth_config = auth_config
        self.storage_dir = Path(storage_dir or self.state_dir / "storage")
        self.auth = auth
        self.notifications = notifications
        self.port = free_port()
        self.config_path = self.state_dir / "config.yml"

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as image references name the registry."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The registry's base URL."""
        return f"http://{self.host}"

    def argv(self) -> list[str]:
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        return ["docker-registry", "serve", str(self.config_path)]

    def config(self) -> dict:
        """The registry configuration (JSON, which is also YAML)."""
        config = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "json", "accesslog": {}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host, "secret": "eagle-lab"},
        }
        if self.auth:
            htpasswd = self.state_dir / "htpasswd"
            htpasswd.write_text(_htpasswd_line(**self.auth))
            config["auth"] = {"htpasswd": {"realm": "eagle-lab", "path": str(htpasswd)}}
        if self.auth_config:
            config["auth"] = self.auth_config
        if self.notifications:
            endpoint = {
                "name": "eagle",
                "url": self.notifications,
                "timeout": "2s",
                "threshold": 5,
                "backoff": "1s",
            }
            config["notifications"] = {"endpoints": [endpoint]}
        return config

    def ready(self) -> bool:
        try:
            self.opener.open(self.url + "/v2/", timeout=2).close()
        except urllib.error.HTTPError as e:
            return e.code == 401  # up, and asking for credentials
        except OSError:
            return False
        return True

    def requests(self) -> list[Request]:
        """Every request answered so far, oldest first, from the registry log."""
        answered = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # an access log line, or not JSON at all
            if "http.response.status" not in record:
                continue
            path = record["http.request.uri"].partition("?")[0]
            answered.append(
                Request(
                    record["http.request.method"],
                    path,
                    int(record["http.response.status"]),
                    int(record.get("http.response.written", 0)),
                )
            )
        return answered

    def _blob_gets(self) -> tuple[Counter, Counter]:
        """Served blob GETs per digest: how many, and how many bytes."""
        counts, sizes = Counter(), Counter()
        for request in self.requests():
            match = BLOB_PATH.match(request.path)
            if request.method == "GET" and request.status in SERVED and match:
                counts[match["digest"]] += 1
                sizes[match["digest"]] += request.written
        return counts, sizes

    def push_blob(self, name: str, data: bytes | Path) -> str:
        """Upload one blob (bytes, or a file streamed from disk) to repository
        ``name`` in a single request (the registry's monolithic upload); return
        its digest."""
        if isinstance(data, Path):
            with open(data, "rb") as f:
                digest = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
            size = data.stat().st_size
            with open(data, "rb") as f:
                return self._put_blob(name, digest, f, size)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        return self._put_blob(name, digest, data, len(data))

    def _put_blob(self, name: str, digest: str, body, size: int) -> str:
        post = urllib.request.Request(
            f"{self.url}/v2/{name}/blobs/uploads/", method="POST"
        )
        with self.opener.open(post, timeout=30) as started:
            location = started.headers["Location"]
        if location.startswith("/"):
            location = self.url + location
        separator = "&" if "?" in location else "?"
        put = urllib.request.Request(
            f"{location}{separator}digest={digest}",
            data=body,
            method="PUT",
            # Any other type and the registry parses the body as a form.
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(size),
            },
        )
        self.opener.open(put, timeout=60 + size / 10e6).close()
        return digest

    def push_manifest(self, name: str, tag: str, data: bytes, media_type: str) -> str:
        """Put a manifest (or index) as ``name:tag``; return its digest."""
        put = urllib.request.Request(
            f"{self.url}/v2/{name}/manifests/{tag}",
            data=data,
            method="PUT",
            headers={"Content-Type": media_type},
        )
        self.opener.open(put, timeout=30).close()
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def blob_gets(self, digest: str | None = None) -> dict[str, int] | int:
        """Successful (200/206) blob GETs: per digest, or for one digest."""
        counts, _ = self._blob_gets()
        return dict(counts) if digest is None else counts[digest]

    def blob_bytes(self, digest: str | None = None) -> int:
        """Bytes the registry sent in blob GET bodies, in all or for one digest."""
        _, sizes = self._blob_gets()
        return sum(sizes.values()) if digest is None else sizes[digest]


def _htpasswd_line(user: str, password: str) -> str:
    """An htpasswd entry with a bcrypt hash, the only kind the registry accepts.

    Uses ``htpasswd`` (apache2-utils) when installed, else glibc's bcrypt through
    the standard ``crypt`` module (deprecated, still in Python 3.11 and 3.12).
    """
    if shutil.which("htpasswd"):
        done = subprocess.run(
            ["htpasswd", "-Bbn", "-C", str(BCRYPT_COST), user, password],
            capture_output=True,
            text=True,
        )
        if done.returncode == 0:
            return done.stdout.strip() + "\n"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # deprecated, but its glibc bcrypt is all we need
        salt = crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << BCRYPT_COST)
        hashed = crypt.crypt(password, salt)
    except (ImportError, AttributeError, OSError, ValueError) as e:
        raise LabError("registry auth needs htpasswd (apache2-utils)") from e
    if not hashed or not hashed.startswith("$2"):
        raise LabError("registry auth needs htpasswd (apache2-utils)")
    return f"{user}:{hashed}\n"
