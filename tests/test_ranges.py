"""Range headers on blobs: one byte range, 416 when it cannot be satisfied."""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from eagle.errors import RegistryError
from eagle.ranges import parse_range


class RangeTests(SynchronousTestCase):
    def assertUnsatisfiable(self, header, size):
        error = self.assertRaises(RegistryError, parse_range, header, size)
        self.assertEqual((error.status, error.code), (416, "RANGE_INVALID"))
        self.assertEqual(error.headers, (("Content-Range", f"bytes */{size}"),))
        return error

    def test_absent(self):
        """No header, or an empty one, means the whole blob."""
        self.assertIsNone(parse_range(None, 1000))
        self.assertIsNone(parse_range("", 1000))

    def test_open_ended(self):
        """bytes=100- runs to the last byte."""
        self.assertEqual(parse_range("bytes=100-", 1000), (100, 999))

    def test_first_byte(self):
        """bytes=0-0 is the first byte alone."""
        self.assertEqual(parse_range("bytes=0-0", 1000), (0, 0))

    def test_closed(self):
        """A closed range is kept as asked, and a last byte past the end is cut."""
        self.assertEqual(parse_range("bytes=10-19", 1000), (10, 19))
        self.assertEqual(parse_range("bytes=990-5000", 1000), (990, 999))
        self.assertEqual(parse_range("bytes=999-999", 1000), (999, 999))

    def test_suffix(self):
        """bytes=-N is the last N bytes, or the whole blob if it is shorter."""
        self.assertEqual(parse_range("bytes=-1", 1000), (999, 999))
        self.assertEqual(parse_range("bytes=-100", 1000), (900, 999))
        self.assertEqual(parse_range("bytes=-5000", 1000), (0, 999))

    def test_past_end(self):
        """A range starting at or past the end is a 416 naming the size."""
        self.assertUnsatisfiable("bytes=1000-", 1000)
        self.assertUnsatisfiable("bytes=5000-6000", 1000)
        self.assertUnsatisfiable("bytes=0-0", 0)

    def test_empty_suffix(self):
        """A zero-length suffix, or any suffix of an empty blob, is a 416."""
        self.assertUnsatisfiable("bytes=-0", 1000)
        self.assertUnsatisfiable("bytes=-10", 0)

    def test_garbage_ignored(self):
        """Headers that are not one well-formed byte range are ignored."""
        for header in [
            "bytes=-",
            "bytes=a-b",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes 0-1",
            "bytes=1-0",
            "bytes=+1-2",
            "bytes=0x10-",
            "bytes=" + "9" * 21 + "-",
            "bytes=0-" + "9" * 21,
            "bytes=\u0661-",  # an Arabic-Indic digit is not a digit here
            "\0",
        ]:
            self.assertIsNone(parse_range(header, 1000), header)

    def test_bytes_header(self):
        """A header as Twisted hands it over (bytes) parses like text, and bytes
        that are not text are ignored rather than failing."""
        self.assertEqual(parse_range(b"bytes=100-", 1000), (100, 999))
        self.assertIsNone(parse_range(b"bytes=\xff-", 1000))
        self.assertUnsatisfiable(b"bytes=1000-", 1000)

    def test_whitespace(self):
        """Surrounding whitespace is tolerated."""
        self.assertEqual(parse_range(" bytes=0-9 ", 1000), (0, 9))

    @given(st.one_of(st.text(), st.binary()), st.integers(0, 2**63))
    def test_any_header(self, header, size):
        """Any header gives None, a range inside the blob, or a 416, nothing else."""
        try:
            span = parse_range(header, size)
        except RegistryError as e:
            self.assertEqual(e.status, 416)
            return
        if span is not None:
            first, last = span
            self.assertTrue(0 <= first <= last < size, (header, size, span))

    @given(st.integers(0, 10**6), st.integers(0, 10**6), st.integers(1, 10**6))
    def test_closed_ranges(self, first, length, size):
        """A well-formed range is served as asked, cut at the end, or is a 416."""
        last = first + length
        header = f"bytes={first}-{last}"
        if first >= size:
            self.assertUnsatisfiable(header, size)
        else:
            self.assertEqual(parse_range(header, size), (first, min(last, size - 1)))
