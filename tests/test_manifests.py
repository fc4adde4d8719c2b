"""The manifest cache: exact bytes kept by digest, tags trusted briefly, and
nothing private handed to someone else."""

import hashlib

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from eagle.manifests import ANYONE, ManifestCache, accepts, credential

OCI = b"application/vnd.oci.image.manifest.v1+json"
INDEX = b"application/vnd.oci.image.index.v1+json"
BODY = b'{"schemaVersion":2,"layers":[]}'
DIGEST = "sha256:" + hashlib.sha256(BODY).hexdigest()
HEADERS = [(b"content-type", [OCI]), (b"docker-content-digest", [DIGEST.encode()])]


class AcceptTests(SynchronousTestCase):
    def test_accepts(self):
        """A type is admitted when listed (with parameters) or by */*; without
        Accept nothing is, since registries then answer by manifest type."""
        self.assertFalse(accepts([], OCI))
        self.assertTrue(accepts([OCI], OCI))
        self.assertTrue(accepts([INDEX + b", " + OCI + b";q=0.9"], OCI))
        self.assertTrue(accepts([b"*/*"], OCI))
        self.assertFalse(accepts([INDEX], OCI))

    def test_credential(self):
        """Credentials are fingerprinted, never kept, and none is anyone."""
        self.assertEqual(credential(None), ANYONE)
        self.assertNotIn(b"secret", credential(b"Basic secret"))
        self.assertNotEqual(credential(b"a"), credential(b"b"))


class ManifestCacheTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.cache = ManifestCache(self.clock, max_bytes=1000, tag_ttl=10)

    def test_digest_kept(self):
        """A manifest by digest is served again, byte for byte, with its headers."""
        key = ("r", "a/b", DIGEST)
        self.cache.store(key, BODY, HEADERS, ANYONE)
        self.clock.advance(10_000)
        entry = self.cache.lookup(key, [OCI], credential(b"anyone else"))
        self.assertEqual((entry.body, entry.headers), (BODY, HEADERS))

    def test_digest_must_match(self):
        """Bytes that do not hash to the digest they came under are not kept."""
        key = ("r", "a/b", "sha256:" + "0" * 64)
        self.cache.store(key, BODY, HEADERS, ANYONE)
        self.assertIsNone(self.cache.lookup(key, [OCI], ANYONE))

    def test_tag_fresh_then_stale(self):
        """A tag is trusted for tag_ttl; after that only when asked for stale."""
        key = ("r", "a/b", "latest")
        self.cache.store(key, BODY, HEADERS, ANYONE)
        self.clock.advance(5)
        self.assertIsNotNone(self.cache.lookup(key, [OCI], ANYONE))
        self.clock.advance(6)
        self.assertIsNone(self.cache.lookup(key, [OCI], ANYONE))
        self.assertIsNotNone(self.cache.lookup(key, [OCI], ANYONE, stale=True))

    def test_private_stays_private(self):
        """A manifest fetched with credentials goes only to the same credentials."""
        key = ("r", "a/b", DIGEST)
        alice, bob = credential(b"Basic alice"), credential(b"Basic bob")
        self.cache.store(key, BODY, HEADERS, alice)
        self.assertIsNotNone(self.cache.lookup(key, [OCI], alice))
        self.assertIsNone(self.cache.lookup(key, [OCI], bob))
        self.assertIsNone(self.cache.lookup(key, [OCI], ANYONE, stale=True))

    def test_accept_respected(self):
        """A cached type the client does not accept is not served from the cache."""
        key = ("r", "a/b", DIGEST)
        self.cache.store(key, BODY, HEADERS, ANYONE)
        self.assertIsNone(self.cache.lookup(key, [INDEX], ANYONE))

    def test_budget(self):
        """The least recently used manifests go when the byte budget is exceeded."""
        for i in range(40):
            self.cache.store(("r", "a", f"t{i}"), b"x" * 100, HEADERS, ANYONE)
        self.assertIsNone(self.cache.lookup(("r", "a", "t0"), [OCI], ANYONE))
        self.assertIsNotNone(self.cache.lookup(("r", "a", "t39"), [OCI], ANYONE))
