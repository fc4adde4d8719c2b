"""Validation of the names a registry request carries: repositories, tags, digests.

Everything that later becomes part of a file name or an upstream URL passes through
here first, so that a bad name is a 400 and never a path on disk.
"""

import re
from dataclasses import dataclass

from eagle import errors

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_HEX = {"sha256": 64, "sha512": 128}
MAX_REPOSITORY_LENGTH = 255


@dataclass(frozen=True)
class Digest:
    """A content digest such as ``sha256:<64 hex>``."""

    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, text: str) -> "Digest":
        algorithm, sep, hex_ = text.partition(":")
        length = _HEX.get(algorithm)
        if (
            not sep
            or length is None
            or len(hex_) != length
            or not re.fullmatch("[0-9a-f]+", hex_)
        ):
            raise errors.digest_invalid(text[:200])
        return cls(algorithm, hex_)


def blob_digest(text: str) -> Digest:
    """Parse a blob digest; blobs are stored by sha256 only."""
    digest = Digest.parse(text)
    if digest.algorithm != "sha256":
        raise errors.digest_invalid(text)
    return digest


def repository(text: str) -> str:
    """Check a repository name against the distribution grammar."""
    if len(text) > MAX_REPOSITORY_LENGTH or not _REPOSITORY.fullmatch(text):
        raise errors.name_invalid(text[:300])
    return text


def reference(text: str) -> str:
    """Check a manifest reference: a tag or a digest."""
    if ":" in text:
        return str(Digest.parse(text))
    if not _TAG.fullmatch(text):
        raise errors.RegistryError(
            400, "MANIFEST_INVALID", "invalid tag or digest", text[:200]
        )
    return text


def is_digest(reference: str) -> bool:
    return ":" in reference
