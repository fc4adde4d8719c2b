"""Rendezvous (highest random weight) hashing: which seeder owns a blob. No I/O.

Every agent computes the same order for a digest without talking to anyone, and
when a seeder leaves only the blobs it owned move, each to its next in line.
"""

import hashlib


def rank(key: str, nodes: list[str]) -> list[str]:
    """``nodes`` ordered by preference for ``key``, owner first."""
    return sorted(
        nodes,
        key=lambda node: hashlib.sha256(f"{node}\0{key}".encode()).digest(),
        reverse=True,
    )
