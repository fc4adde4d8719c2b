"""What a registry says about images, read without I/O: manifests and indexes,
and Docker Distribution's notification envelopes."""

import json
from dataclasses import dataclass

from eagle import digest as names
from eagle import errors

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEX_TYPES = (DOCKER_LIST, OCI_INDEX)
MANIFEST_TYPES = IMAGE_TYPES + INDEX_TYPES
EVENTS_TYPE = "application/vnd.docker.distribution.events.v1+json"
MAX_EVENTS = 1000


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int


@dataclass(frozen=True)
class Platform:
    """``os/architecture[/variant]``, as in ``--platform linux/arm64/v8``."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Platform":
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"platform {text!r} is not os/architecture[/variant]")
        return cls(*parts)

    def matches(self, other: "Platform") -> bool:
        return (self.os, self.architecture) == (other.os, other.architecture) and (
            self.variant is None or self.variant == other.variant
        )

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Manifest:
    """An image manifest (``blobs``: config first, then layers) or an index
    (``children``: its manifests and their platforms)."""

    media_type: str
    blobs: tuple[Blob, ...] = ()
    children: tuple[tuple[Blob, Platform | None], ...] = ()

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def parse_manifest(media_type: str, body: bytes) -> Manifest:
    """A manifest's blobs or an index's children; ValueError if it is neither."""
    try:
        document = json.loads(body)
    except ValueError as e:
        raise ValueError(f"manifest is not JSON: {e}") from None
    if not isinstance(document, dict):
        raise ValueError("manifest is not a JSON object")
    media_type = document.get("mediaType") or media_type.split(";")[0].strip()
    if media_type in INDEX_TYPES or (
        "manifests" in document and "layers" not in document
    ):
        children = []
        for entry in _list(document, "manifests"):
            platform = entry.get("platform")
            children.append(
                (
                    _descriptor(entry),
                    Platform(
                        str(platform.get("os", "")),
                        str(platform.get("architecture", "")),
                        platform.get("variant"),
                    )
                    if isinstance(platform, dict)
                    else None,
                )
            )
        return Manifest(media_type or OCI_INDEX, children=tuple(children))
    config = document.get("config")
    if not isinstance(config, dict):
        raise ValueError("manifest has no config")
    blobs = [_descriptor(config)] + [_descriptor(x) for x in _list(document, "layers")]
    return Manifest(media_type or OCI_MANIFEST, blobs=tuple(blobs))


def _list(document: dict, key: str) -> list[dict]:
    value = document.get(key, [])
    if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
        raise ValueError(f"manifest's {key} is not a list of descriptors")
    return value


def _descriptor(entry: dict) -> Blob:
    digest, size = entry.get("digest"), entry.get("size")
    try:
        names.Digest.parse(digest if isinstance(digest, str) else "")
    except errors.RegistryError:
        raise ValueError(
            f"descriptor with a bad digest: {str(digest)[:100]!r}"
        ) from None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"descriptor of {digest} with a bad size")
    return Blob(digest, size)


@dataclass(frozen=True)
class PushEvent:
    """A manifest pushed to a registry, from a notification."""

    host: str  # the registry as the pusher named it
    repository: str
    digest: str
    tag: str | None


def parse_events(body: bytes) -> list[PushEvent]:
    """The manifest pushes in a notification envelope, others left out.

    Raises ValueError saying what is wrong with a body that is not an envelope.
    """
    try:
        envelope = json.loads(body)
    except ValueError as e:
        raise ValueError(f"body is not JSON: {e}") from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("events"), list):
        raise ValueError('body is not an envelope: no "events" list')
    events = envelope["events"]
    if len(events) > MAX_EVENTS:
        raise ValueError(f"more than {MAX_EVENTS} events")
    pushes = []
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            raise ValueError(f"event {i} is not an object")
        target, request = event.get("target"), event.get("request")
        if not isinstance(target, dict) or not isinstance(request, dict):
            raise ValueError(f"event {i} has no target or request")
        media_type = target.get("mediaType")
        if event.get("action") != "push" or media_type not in MANIFEST_TYPES:
            continue  # pulls, blob uploads, deletes: nothing to warm
        host, repository, digest = (
            request.get("host"),
            target.get("repository"),
            target.get("digest"),
        )
        if not all(isinstance(x, str) and x for x in (host, repository, digest)):
            raise ValueError(f"event {i} lacks host, repository or digest")
        try:
            names.repository(repository)
            names.Digest.parse(digest)
        except errors.RegistryError as e:
            raise ValueError(f"event {i}: {e.message}: {e.detail}") from None
        tag = target.get("tag")
        pushes.append(
            PushEvent(host, repository, digest, tag if isinstance(tag, str) else None)
        )
    return pushes
