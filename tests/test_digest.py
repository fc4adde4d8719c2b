"""Names, tags and digests a registry request carries: what passes, what is a 400."""

import re

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from eagle import digest as names
from eagle.errors import RegistryError

HEX64 = "0123456789abcdef" * 4
SHA256 = "sha256:" + HEX64

# The distribution spec's grammar, written out independently of eagle.digest.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
SPEC_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")

# Names the grammar allows: components of lowercase letters and digits joined by
# separators, components joined by slashes.
_ALNUM = st.text(alphabet="abcxyz0189", min_size=1, max_size=8)
_SEPARATED = st.lists(
    st.tuples(st.sampled_from([".", "_", "__", "-", "---"]), _ALNUM), max_size=3
)
_PART = st.builds(
    lambda a, rest: a + "".join(s + b for s, b in rest), _ALNUM, _SEPARATED
)
NAMES = st.lists(_PART, min_size=1, max_size=6).map("/".join)


class DigestTests(SynchronousTestCase):
    def assertDigestInvalid(self, text):
        error = self.assertRaises(RegistryError, names.Digest.parse, text)
        self.assertEqual((error.status, error.code), (400, "DIGEST_INVALID"))
        return error

    def test_sha256(self):
        """A sha256 digest of 64 lowercase hex digits parses and prints back."""
        digest = names.Digest.parse(SHA256)
        self.assertEqual((digest.algorithm, digest.hex), ("sha256", HEX64))
        self.assertEqual(str(digest), SHA256)

    def test_sha512(self):
        """A sha512 digest needs 128 hex digits."""
        self.assertEqual(names.Digest.parse("sha512:" + HEX64 * 2).algorithm, "sha512")
        self.assertDigestInvalid("sha512:" + HEX64)

    def test_unknown_algorithm(self):
        """Algorithms other than sha256 and sha512 are refused."""
        for text in ["md5:" + "0" * 32, "sha1:" + "0" * 40, "SHA256:" + HEX64]:
            self.assertDigestInvalid(text)

    def test_wrong_length(self):
        """One hex digit too few or too many is refused."""
        self.assertDigestInvalid(SHA256[:-1])
        self.assertDigestInvalid(SHA256 + "0")
        self.assertDigestInvalid("sha256:")

    def test_not_hex(self):
        """Uppercase hex, non-hex letters and short garbage are refused."""
        for text in [
            "sha256:" + HEX64.upper(),
            "sha256:" + "g" * 64,
            "sha256:xyz",
            "sha256",
            "",
            ":",
        ]:
            self.assertDigestInvalid(text)

    def test_path_tricks(self):
        """Dot-dot, slashes, NUL, percent-encoding and newlines never pass."""
        for text in [
            "sha256:" + "../" * 21 + "a",
            "sha256:" + HEX64[:-2] + "..",
            "sha256:" + HEX64[:-1] + "\0",
            "sha256:" + HEX64[:-3] + "%00",
            "sha256:%2e%2e" + HEX64[:-6],
            "sha256:" + HEX64 + "\n",
            "sha256:" + HEX64[:-1] + "/",
            "sha256:" + HEX64[:-1] + "\u0661",  # an Arabic-Indic digit
        ]:
            self.assertDigestInvalid(text)

    def test_over_long_detail_is_cut(self):
        """The error detail of a huge digest is bounded."""
        error = self.assertDigestInvalid("sha256:" + "a" * 100_000)
        self.assertLessEqual(len(error.detail), 200)

    def test_blob_digest_is_sha256(self):
        """Blobs are stored by sha256 only, so a valid sha512 is refused for blobs."""
        self.assertEqual(names.blob_digest(SHA256).hex, HEX64)
        error = self.assertRaises(
            RegistryError, names.blob_digest, "sha512:" + HEX64 * 2
        )
        self.assertEqual(error.code, "DIGEST_INVALID")

    @given(st.text())
    def test_any_text(self, text):
        """Any text parses to a well-formed digest or raises a 400, nothing else."""
        try:
            digest = names.Digest.parse(text)
        except RegistryError as e:
            self.assertEqual((e.status, e.code), (400, "DIGEST_INVALID"))
            return
        self.assertEqual(str(digest), text)
        self.assertRegex(digest.hex, r"\A[0-9a-f]{64}(?:[0-9a-f]{64})?\Z")

    @given(st.sampled_from([("sha256", 32), ("sha512", 64)]), st.data())
    def test_round_trip(self, algorithm, data):
        """Every well-formed sha256 or sha512 digest parses back to itself."""
        name, size = algorithm
        raw = data.draw(st.binary(min_size=size, max_size=size))
        text = f"{name}:{raw.hex()}"
        self.assertEqual(str(names.Digest.parse(text)), text)


class RepositoryTests(SynchronousTestCase):
    def assertNameInvalid(self, text):
        error = self.assertRaises(RegistryError, names.repository, text)
        self.assertEqual((error.status, error.code), (400, "NAME_INVALID"))
        return error

    def test_valid(self):
        """Names of the distribution grammar pass unchanged."""
        for text in [
            "alpine",
            "library/alpine",
            "a/b/c/d",
            "my-org/my.app_v2",
            "a__b",
            "a---b",
            "0/1",
        ]:
            self.assertEqual(names.repository(text), text)

    def test_invalid(self):
        """Uppercase, empty components, bad separators and path tricks are 400s."""
        for text in [
            "",
            "Alpine",
            "/alpine",
            "alpine/",
            "a//b",
            "a___b",
            "a..b",
            ".a",
            "a.",
            "-a",
            "..",
            "a/../b",
            "../../etc/passwd",
            "a/./b",
            "%2e%2e",
            "a%2fb",
            "a\0b",
            "a b",
            "a\nb",
            "a\\b",
            "caf\u00e9",
        ]:
            self.assertNameInvalid(text)

    def test_length(self):
        """A name may be 255 characters long, not more; the detail is bounded."""
        self.assertEqual(len(names.repository("a" * 255)), 255)
        error = self.assertNameInvalid("a" * 256)
        self.assertNameInvalid("a/" * 127 + "ab")
        self.assertLessEqual(len(self.assertNameInvalid("a" * 10_000).detail), 300)
        self.assertLessEqual(len(error.detail), 300)

    @given(st.text())
    def test_any_text(self, text):
        """Any text is either a name of the spec's grammar or a 400, nothing else."""
        try:
            name = names.repository(text)
        except RegistryError as e:
            self.assertEqual((e.status, e.code), (400, "NAME_INVALID"))
            self.assertFalse(len(text) <= 255 and SPEC_NAME.fullmatch(text))
            return
        self.assertEqual(name, text)
        self.assertTrue(SPEC_NAME.fullmatch(text))
        self.assertNotIn("..", text.split("/"))

    @given(NAMES)
    def test_grammar(self, text):
        """Every name the grammar allows passes."""
        self.assertEqual(names.repository(text), text)


class ReferenceTests(SynchronousTestCase):
    def test_tags(self):
        """Tags of up to 128 characters from the tag alphabet pass."""
        for text in ["latest", "1", "v1.2.3-rc_1", "_x", "A" * 128]:
            self.assertEqual(names.reference(text), text)

    def test_bad_tags(self):
        """Tags that start with '.' or '-', are too long or carry other characters
        are 400s."""
        for text in ["", ".x", "-x", "A" * 129, "a/b", "..", "a\0", "a%2e", "t\u00e9"]:
            error = self.assertRaises(RegistryError, names.reference, text)
            self.assertEqual(error.status, 400, text)

    def test_digest_reference(self):
        """A reference with a colon must be a valid digest."""
        self.assertEqual(names.reference(SHA256), SHA256)
        self.assertTrue(names.is_digest(SHA256))
        self.assertFalse(names.is_digest("latest"))
        error = self.assertRaises(RegistryError, names.reference, "sha256:xyz")
        self.assertEqual(error.code, "DIGEST_INVALID")

    @given(st.text())
    def test_any_text(self, text):
        """Any text is a tag, a digest, or a 4xx error, never another exception."""
        try:
            ref = names.reference(text)
        except RegistryError as e:
            self.assertTrue(400 <= e.status < 500)
            return
        self.assertEqual(ref, text)
        self.assertRegex(ref, r"\A[A-Za-z0-9_.:-]+\Z")
