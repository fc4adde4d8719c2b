"""OCI distribution errors: one exception type, rendered as the spec's JSON body."""

import json
from dataclasses import dataclass


@dataclass
class RegistryError(Exception):
    """An error answered on the registry API, with its HTTP status and OCI code."""

    status: int
    code: str
    message: str
    detail: object = None
    headers: tuple[tuple[str, str], ...] = ()

    def body(self) -> bytes:
        error = {"code": self.code, "message": self.message}
        if self.detail is not None:
            error["detail"] = self.detail
        return json.dumps({"errors": [error]}).encode()

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


def blob_unknown(digest: str) -> RegistryError:
    return RegistryError(404, "BLOB_UNKNOWN", "blob unknown to registry", digest)


def manifest_unknown(reference: str) -> RegistryError:
    return RegistryError(404, "MANIFEST_UNKNOWN", "manifest unknown", reference)


def digest_invalid(text: str) -> RegistryError:
    return RegistryError(400, "DIGEST_INVALID", "invalid or unsupported digest", text)


def name_invalid(text: str) -> RegistryError:
    return RegistryError(400, "NAME_INVALID", "invalid repository name", text)


def name_unknown(text: str) -> RegistryError:
    return RegistryError(404, "NAME_UNKNOWN", "repository name not known", text)


def unsupported(message: str) -> RegistryError:
    return RegistryError(405, "UNSUPPORTED", message)


def range_invalid(text: str, size: int) -> RegistryError:
    return RegistryError(
        416,
        "RANGE_INVALID",
        "requested range not satisfiable",
        text,
        (("Content-Range", f"bytes */{size}"),),
    )


def upstream_unavailable(source: str, reason: str) -> RegistryError:
    return RegistryError(
        503, "UNAVAILABLE", f"upstream {source} unavailable", {"reason": reason}
    )


def insufficient_storage(needed: int, free: int) -> RegistryError:
    # 507 rather than 503: the cause is this host's disk, and a retry on this
    # host fails the same way until space is made; either way a 5xx sends a
    # client with a fallback (Docker's mirror list) on to the origin.
    return RegistryError(
        507,
        "UNKNOWN",
        "not enough disk space on this host for the blob",
        {"needed": needed, "free": free},
    )


def upstream_bad_reply(source: str, reason: str) -> RegistryError:
    return RegistryError(502, "UNKNOWN", f"bad reply from {source}", {"reason": reason})


@dataclass
class UpstreamAnswer(Exception):
    """An origin's refusal (401, 403, 429) that the client must see as it was sent,
    for example to follow a Bearer challenge and fetch a token."""

    status: int
    headers: list[tuple[bytes, list[bytes]]]
    body: bytes
