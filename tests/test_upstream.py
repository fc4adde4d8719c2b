"""Choosing the origin registry for a request, and Docker Hub's library/ names."""

from twisted.trial.unittest import SynchronousTestCase

from eagle.digest import Digest
from eagle.errors import RegistryError
from eagle.upstream import DOCKER_HUB, BlobRef, Upstream, Upstreams

HUB = Upstream(DOCKER_HUB, "https://registry-1.docker.io")
LOCAL = Upstream("127.0.0.1:5000", "http://127.0.0.1:5000")
QUAY = Upstream("quay.io", "https://quay.io")
DIGEST = Digest("sha256", "ab" * 32)


class SelectTests(SynchronousTestCase):
    def test_ns(self):
        """ns= selects the configured upstream of that name."""
        upstreams = Upstreams([HUB, LOCAL, QUAY])
        self.assertIs(upstreams.select("quay.io"), QUAY)
        self.assertIs(upstreams.select("127.0.0.1:5000"), LOCAL)
        self.assertIs(upstreams.select("docker.io"), HUB)

    def test_default_is_first(self):
        """Without ns= (Docker's registry-mirrors) the first registry is used."""
        upstreams = Upstreams([LOCAL, HUB])
        self.assertIs(upstreams.select(None), LOCAL)
        self.assertIs(upstreams.select(""), LOCAL)

    def test_configured_default(self):
        """A configured default registry wins over the order of the list."""
        self.assertIs(Upstreams([LOCAL, HUB], default=DOCKER_HUB).select(None), HUB)

    def test_unknown_ns(self):
        """An ns that is not configured is a 404 NAME_UNKNOWN, never a fetch."""
        upstreams = Upstreams([HUB])
        for ns in ["evil.example", "docker.io.evil.example", "DOCKER.IO", "x" * 5000]:
            error = self.assertRaises(RegistryError, upstreams.select, ns)
            self.assertEqual((error.status, error.code), (404, "NAME_UNKNOWN"))
            self.assertLessEqual(len(error.detail), 256)

    def test_nothing_configured(self):
        """With no registries at all every request is NAME_UNKNOWN."""
        upstreams = Upstreams([])
        self.assertIsNone(upstreams.default)
        for ns in [None, "docker.io"]:
            error = self.assertRaises(RegistryError, upstreams.select, ns)
            self.assertEqual(error.status, 404)

    def test_default_not_configured(self):
        """A default that names no configured registry is NAME_UNKNOWN too."""
        error = self.assertRaises(
            RegistryError, Upstreams([LOCAL], default="quay.io").select, None
        )
        self.assertEqual(error.code, "NAME_UNKNOWN")

    def test_iterate(self):
        """The upstreams can be listed, each once."""
        self.assertEqual(list(Upstreams([HUB, LOCAL])), [HUB, LOCAL])


class RepositoryTests(SynchronousTestCase):
    def test_library_prefix(self):
        """A single-name Docker Hub image lives under library/."""
        self.assertEqual(HUB.repository("alpine"), "library/alpine")

    def test_same_upstream_repository(self):
        """/v2/alpine?ns=docker.io and /v2/library/alpine name one repository."""
        self.assertEqual(HUB.repository("alpine"), HUB.repository("library/alpine"))

    def test_other_names_unchanged(self):
        """Names with a slash, and any name on other registries, stay as they are."""
        self.assertEqual(HUB.repository("bitnami/redis"), "bitnami/redis")
        self.assertEqual(LOCAL.repository("alpine"), "alpine")
        self.assertEqual(QUAY.repository("coreos/etcd"), "coreos/etcd")


class URLTests(SynchronousTestCase):
    def test_urls(self):
        """Blob and manifest URLs are built from the upstream's URL."""
        self.assertEqual(
            LOCAL.blob_url("a/b", DIGEST),
            f"http://127.0.0.1:5000/v2/a/b/blobs/sha256:{'ab' * 32}",
        )
        self.assertEqual(
            HUB.manifest_url("library/alpine", "3.19"),
            "https://registry-1.docker.io/v2/library/alpine/manifests/3.19",
        )

    def test_blob_ref(self):
        """A blob reference knows its hex and compares by value."""
        ref = BlobRef(LOCAL, "a", DIGEST)
        self.assertEqual(ref.hex, "ab" * 32)
        self.assertEqual(ref, BlobRef(LOCAL, "a", Digest("sha256", "ab" * 32)))
