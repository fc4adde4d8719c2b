"""HTTP Range requests on blobs: one range only, as registries support."""

import re

from eagle import errors

# ASCII digits only: \d would also take other scripts' digits, which int() accepts.
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")


def parse_range(header: str | bytes | None, size: int) -> tuple[int, int] | None:
    """Return the inclusive ``(first, last)`` byte range asked for, or None for all.

    A syntactically invalid header is ignored, as RFC 9110 allows; a range that
    cannot be satisfied raises a 416 error.
    """
    if not header:
        return None
    if isinstance(header, bytes):
        # Twisted hands request headers over as bytes.
        header = header.decode("latin-1")
    match = _RANGE.fullmatch(header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first_text, last_text = match.groups()
    if len(first_text) > 20 or len(last_text) > 20:
        return None
    if first_text == "":
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise errors.range_invalid(header, size)
        return max(0, size - suffix), size - 1
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None
    # Checked before filling in an open end, so that "bytes=<size>-" is a 416 too.
    if first >= size:
        raise errors.range_invalid(header, size)
    last = int(last_text) if last_text else size - 1
    return first, min(last, size - 1)
