"""The lab drives the real registry and engines (no Eagle in between).

Tests that need a missing tool or root skip with the reason, unless
EAGLE_REQUIRE_ALL is set: then they fail, so that nothing silently stops being
tested.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase

from eagle.lab import LabError, unavailable
from eagle.lab.engines import Containerd, Dockerd, Podman, skopeo_pull
from eagle.lab.image import (
    Image,
    build_oci_layout,
    debian_image,
    debian_mirror,
    push,
    python_image,
    small_image,
)
from eagle.lab.registry import Registry

_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LabTestCase(TestCase):
    """Temporary directories, services stopped at the end, skips with reasons."""

    def need(self, *tools: str, root: bool = False) -> None:
        """Skip (or fail under EAGLE_REQUIRE_ALL) without these tools or root."""
        reason = unavailable(*tools, root=root)
        if reason and os.environ.get("EAGLE_REQUIRE_ALL"):
            self.fail(reason)
        if reason:
            raise SkipTest(reason)

    def tmpdir(self) -> Path:
        """A fresh directory, short enough to hold unix sockets, removed after
        (kept with EAGLE_KEEP=1, to read the daemons' logs)."""
        path = Path(tempfile.mkdtemp(prefix="eagle-lab-"))
        if not os.environ.get("EAGLE_KEEP"):
            self.addCleanup(shutil.rmtree, path, ignore_errors=True)
        return path

    def start(self, service):
        """Start a service and stop it at the end of the test."""
        self.addCleanup(service.stop)
        return service.start()

    def registry_with_image(self, name: str = "demo/small", **options):
        """A running registry holding a small image as ``name:1``."""
        self.need("docker-registry", "skopeo")
        tmp = self.tmpdir()
        registry = self.start(Registry(tmp / "registry", **options))
        image = small_image(tmp / "layout")
        push(image, registry.url, name, "1", creds=_creds(options.get("auth")))
        return registry, image

    def assertOCIError(self, answer, status: int, code: str | None = None) -> None:
        """An OCI JSON error body with this status (and code), and no traceback."""
        got, headers, body = answer[:3]
        self.assertEqual(got, status, body[:300])
        self.assertEqual(headers.get("content-type"), "application/json")
        errors = json.loads(body)["errors"]
        self.assertIsInstance(errors[0]["message"], str)
        if code is not None:
            self.assertEqual(errors[0]["code"], code)
        self.assertNotIn(b"Traceback", body)
        self.assertNotIn(b'File "', body)

    def assertServedOnce(self, registry: Registry, image: Image) -> None:
        """The registry sent each layer blob exactly once, in full."""
        expected = {layer.digest: 1 for layer in image.layers}
        gets = registry.blob_gets()
        self.assertEqual({d: gets.get(d, 0) for d in expected}, expected)
        for layer in image.layers:
            self.assertEqual(registry.blob_bytes(layer.digest), layer.size)


def _creds(auth: dict[str, str] | None) -> str | None:
    return f"{auth['user']}:{auth['password']}" if auth else None


class ImageTests(LabTestCase):
    """Image layouts from real files; no external tool needed."""

    def tree(self) -> Path:
        """A small tree: one big directory, a few small ones, a symlink."""
        tree = self.tmpdir() / "tree"
        for i in range(8):
            path = tree / "usr" / f"part{i}" / "data"
            path.parent.mkdir(parents=True)
            path.write_bytes(hashlib.sha256(str(i).encode()).digest() * 4096)
        (tree / "etc").mkdir()
        (tree / "etc" / "hostname").write_text("lab\n")
        (tree / "bin").symlink_to("usr/bin")
        return tree

    def test_layout_is_valid_oci(self):
        """Blobs match their digests; diff_ids match the uncompressed tars."""
        image = build_oci_layout(self.tree(), self.tmpdir() / "oci", layers=3)
        self.assertEqual(len(image.layers), 3)
        self.assertEqual(
            json.loads((image.layout / "oci-layout").read_text()),
            {"imageLayoutVersion": "1.0.0"},
        )
        for digest in [image.manifest, image.config]:
            data = image.blob(digest).read_bytes()
            self.assertEqual("sha256:" + hashlib.sha256(data).hexdigest(), digest)
        config = json.loads(image.blob(image.config).read_bytes())
        self.assertEqual((config["os"], config["rootfs"]["type"]), ("linux", "layers"))
        for layer in image.layers:
            data = image.blob(layer.digest).read_bytes()
            self.assertEqual(len(data), layer.size)
            self.assertEqual("sha256:" + hashlib.sha256(data).hexdigest(), layer.digest)
            diff = hashlib.sha256(gzip.decompress(data)).hexdigest()
            self.assertEqual("sha256:" + diff, layer.diff_id)

    def test_layers_are_balanced(self):
        """The big directory is cut so that layers weigh about the same."""
        image = build_oci_layout(self.tree(), self.tmpdir() / "oci", layers=4)
        sizes = [layer.size for layer in image.layers]
        self.assertLess(max(sizes), 1.5 * min(sizes))

    def test_deterministic(self):
        """The same tree gives the same digests, even with other file times."""
        tree = self.tree()
        first = build_oci_layout(tree, self.tmpdir() / "a", layers=2)
        os.utime(tree / "etc" / "hostname", (1, 1))
        second = build_oci_layout(tree, self.tmpdir() / "b", layers=2)
        self.assertEqual(first.manifest, second.manifest)
        self.assertEqual(Image.load(first.layout), first)

    def test_uncompressed(self):
        """Without compression a layer's digest is its diff_id."""
        image = build_oci_layout(self.tree(), self.tmpdir() / "oci", compress=False)
        for layer in image.layers:
            self.assertEqual(layer.digest, layer.diff_id)

    def test_too_few_files(self):
        tree = self.tmpdir()
        (tree / "only").write_text("one file")
        self.assertRaises(LabError, build_oci_layout, tree, tree / "oci", layers=2)

    def test_debian_mirror(self):
        """The mirror comes from deb822 or one-line apt sources, not security."""
        apt = self.tmpdir()
        (apt / "sources.list.d").mkdir()
        (apt / "sources.list.d" / "debian.sources").write_text(
            "Types: deb\nURIs: http://mirror.example/debian-security\n"
            "Suites: bookworm-security\nComponents: main\n\n"
            "# a comment\nTypes: deb deb-src\nURIs: http://mirror.example/debian\n"
            "Suites: bookworm bookworm-updates\nComponents: main\n"
        )
        self.assertEqual(debian_mirror(apt_dir=apt), "http://mirror.example/debian")
        (apt / "sources.list").write_text(
            "deb [arch=amd64 signed-by=/k.gpg] http://other.example/debian"
            " bookworm main\n"
        )
        self.assertEqual(debian_mirror(apt_dir=apt), "http://other.example/debian")
        self.assertRaises(LabError, debian_mirror, "trixie", apt_dir=apt)


class RegistryTests(LabTestCase):
    """The origin registry, and skopeo as the simplest client."""

    def test_push_and_skopeo_pull(self):
        """skopeo pulls each layer once, verified; HEADs are not counted."""
        registry, image = self.registry_with_image()
        self.assertEqual(registry.blob_gets(), {})  # a push only HEADs blobs
        pulled = skopeo_pull(f"{registry.host}/demo/small:1", self.tmpdir() / "dir")
        self.assertEqual(pulled, [layer.digest for layer in image.layers])
        self.assertServedOnce(registry, image)
        self.assertEqual(registry.blob_gets(image.layers[0].digest), 1)

    def test_stop(self):
        """After stop() the registry no longer answers, and stop() may repeat."""
        registry, _ = self.registry_with_image()
        registry.stop()
        self.assertFalse(registry.ready())
        registry.stop()

    def test_auth(self):
        """With htpasswd auth, pulls without credentials are refused."""
        if unavailable("htpasswd") and not _has_crypt_bcrypt():
            self.need("htpasswd")
        auth = {"user": "eagle", "password": "s3cret"}
        registry, image = self.registry_with_image(auth=auth)
        ref = f"{registry.host}/demo/small:1"
        self.assertRaises(LabError, skopeo_pull, ref, self.tmpdir() / "no-creds")
        skopeo_pull(ref, self.tmpdir() / "dir", creds="eagle:s3cret")
        self.assertServedOnce(registry, image)

    def test_notifications(self):
        """The registry posts push and pull events to the notification URL."""
        events = []
        listener = _EventListener(events)
        self.addCleanup(listener.stop)
        registry, image = self.registry_with_image(notifications=listener.url)
        skopeo_pull(f"{registry.host}/demo/small:1", self.tmpdir() / "dir")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            e["action"] == "pull" for e in events
        ):
            time.sleep(0.1)
        self.assertIn("push", {e["action"] for e in events})
        pulled = {e["target"]["digest"] for e in events if e["action"] == "pull"}
        self.assertIn(image.manifest, pulled)


def _has_crypt_bcrypt() -> bool:
    try:
        from eagle.lab.registry import _htpasswd_line

        _htpasswd_line("u", "p")
    except LabError:
        return False
    return True


class _EventListener(http.server.ThreadingHTTPServer):
    """A loopback HTTP endpoint that keeps the events POSTed to it."""

    def __init__(self, events: list):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                events.extend(json.loads(body)["events"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/events"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self):
        self.shutdown()
        self.server_close()


class EngineTests(LabTestCase):
    """Podman, Docker and containerd pull from the registry, directly or through
    a mirror entry for Docker Hub names; the registry sends each layer once."""

    def test_podman_pull(self):
        self.need("podman", root=True)
        registry, image = self.registry_with_image()
        podman = Podman(self.tmpdir())
        ref = f"{registry.host}/demo/small:1"
        podman.pull(ref)
        self.assertEqual(podman.image_layers(ref), [x.diff_id for x in image.layers])
        self.assertServedOnce(registry, image)

    def test_podman_mirror(self):
        self.need("podman", root=True)
        registry, image = self.registry_with_image("library/eagle-demo")
        podman = Podman(self.tmpdir(), mirrors={"docker.io": registry.host})
        podman.pull("docker.io/library/eagle-demo:1")
        self.assertServedOnce(registry, image)

    def test_dockerd_pull(self):
        self.need("dockerd", "docker", "containerd", root=True)
        registry, image = self.registry_with_image()
        dockerd = self.start(Dockerd(self.tmpdir()))
        ref = f"{registry.host}/demo/small:1"
        dockerd.pull(ref)
        self.assertEqual(dockerd.image_layers(ref), [x.diff_id for x in image.layers])
        self.assertServedOnce(registry, image)
        dockerd.stop()
        self.assertFalse(dockerd.containerd.running)
        self.assertFalse(dockerd.socket.exists())

    def test_dockerd_mirror(self):
        """A Docker Hub name comes from the registry mirror alone."""
        self.need("dockerd", "docker", "containerd", root=True)
        registry, image = self.registry_with_image("library/eagle-demo")
        dockerd = self.start(Dockerd(self.tmpdir(), mirrors=[registry.url]))
        dockerd.pull("eagle-demo:1")
        digests = dockerd.inspect("eagle-demo:1")["RepoDigests"]
        self.assertEqual(digests, [f"eagle-demo@{image.manifest}"])
        self.assertServedOnce(registry, image)

    def test_dockerd_mirror_miss_stays_local(self):
        """When the mirror lacks an image, docker's fallback to Docker Hub fails
        at the dead loopback proxy instead of leaving the machine."""
        self.need("dockerd", "docker", "containerd", root=True)
        registry, _ = self.registry_with_image()
        dockerd = self.start(Dockerd(self.tmpdir(), mirrors=[registry.url]))
        error = self.assertRaises(LabError, dockerd.pull, "eagle-absent:1")
        self.assertIn("127.0.0.1:9", str(error))

    def test_containerd_mirror(self):
        """ctr pulls a Docker Hub name through a hosts.toml mirror."""
        self.need("containerd", "ctr", root=True)
        registry, image = self.registry_with_image("library/eagle-demo")
        containerd = self.start(Containerd(self.tmpdir()))
        containerd.mirror("docker.io", registry.url)
        ref = "docker.io/library/eagle-demo:1"
        self.assertEqual(containerd.pull(ref), image.manifest)
        self.assertEqual(containerd.image_layers(ref), [x.digest for x in image.layers])
        self.assertServedOnce(registry, image)


class RealImageTests(LabTestCase):
    """Real-sized images: a debootstrap'd Debian (cached) and Python packages."""

    def test_debian_image(self):
        self.need("debootstrap", "docker-registry", "skopeo", root=True)
        image = debian_image(layers=4)
        self.assertEqual(len(image.layers), 4)
        self.assertGreater(image.size, 20 << 20)
        tmp = self.tmpdir()
        registry = self.start(Registry(tmp / "registry"))
        push(image, registry.url, "eagle-lab/debian", "bookworm")
        skopeo_pull(f"{registry.host}/eagle-lab/debian:bookworm", tmp / "dir")
        self.assertServedOnce(registry, image)

    def test_python_image(self):
        """The no-root fallback: installed Python packages in N layers."""
        image = python_image(self.tmpdir() / "oci", layers=3)
        self.assertEqual(len(image.layers), 3)
        self.assertGreater(image.size, 1 << 20)
