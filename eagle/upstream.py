"""Upstream registries (origins) and the blobs that live in them."""

from dataclasses import dataclass

from eagle import errors
from eagle.digest import Digest

DOCKER_HUB = "docker.io"


@dataclass(frozen=True)
class Upstream:
    """An origin registry: ``host`` as clients name it, ``url`` where it answers."""

    host: str
    url: str

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
