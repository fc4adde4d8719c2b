"""Upstream registries (origins) and the blobs that live in them."""

from dataclasses import dataclass, field

from eagle import errors
from eagle.digest import Digest

DOCKER_HUB = "docker.io"


@dataclass(frozen=True)
class Upstream:
    """An origin registry: ``host`` as clients name it, ``url`` where it answers,
    and the credentials Eagle uses there when a client brings none."""

    host: str
    url: str
    username: str | None = field(default=None, compare=False)
    password: str | None = field(default=None, compare=False, repr=False)

    def repository(self, name: str) -> str:
        """Docker Hub keeps single-name images under ``library/``."""
        if self.host == DOCKER_HUB and "/" not in name:
            return "library/" + name
        return name

    def blob_url(self, repository: str, digest: Digest) -> str:
        return f"{self.url}/v2/{repository}/blobs/{digest}"

    def manifest_url(self, repository: str, reference: str) -> str:
        return f"{self.url}/v2/{repository}/manifests/{reference}"


class Upstreams:
    """The configured origins, found by the ``ns`` a client sends (containerd) or by
    default when it sends none (Docker's registry-mirrors)."""

    def __init__(self, upstreams: list[Upstream], default: str | None = None):
        self._by_host = {u.host: u for u in upstreams}
        self.default = default or (upstreams[0].host if upstreams else None)

    def split(self, name: str) -> tuple[Upstream | None, str]:
        """A configured registry named by the first component of a repository
        name (``docker pull agent:5050/quay.io/org/app``), and the rest of it.

        As Docker decides it: the first component names a host if it has a dot
        or a colon, or is ``localhost``.
        """
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            upstream = self._by_host.get(first)
            if upstream is not None:
                return upstream, rest
        return None, name

    def select(self, ns: str | None) -> Upstream:
        host = ns or self.default
        upstream = self._by_host.get(host or "")
        if upstream is None:
            raise errors.RegistryError(
                404, "NAME_UNKNOWN", "registry not configured", (ns or "")[:256]
            )
        return upstream

    def __iter__(self):
        return iter(self._by_host.values())


@dataclass(frozen=True)
class BlobRef:
    """One blob, and where and as whom to fetch it from."""

    upstream: Upstream
    repository: str
    digest: Digest
    authorization: bytes | None = None

    @property
    def hex(self) -> str:
        return self.digest.hex
