"""Real clients pull every manifest type through an agent: an OCI image, a Docker
schema 2 image, an OCI index and a Docker manifest list of two platforms, and an
OCI artifact, pushed to the real docker-registry with skopeo (converted by it
where the type asks) and pulled through one agent by skopeo, Docker and Podman,
the last also as a registries.conf mirror. Digests are checked against what was
pushed; layers are checked to come from the agent."""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

from eagle.lab import offline_env, run
from eagle.lab.cluster import Cluster
from eagle.lab.engines import Dockerd, Podman, skopeo_pull
from eagle.lab.image import (
    ARCHITECTURES,
    OCI_MANIFEST,
    add_platforms,
    push,
    push_as,
    small_image,
)
from eagle.lab.registry import Registry
from eagle.lab.scripted import OCI_EMPTY, artifact_manifest
from tests.test_lab import LabTestCase
from tests.test_mirror import request

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT_ALL = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])
# Two platforms, this machine's first, so that engines here pick a child.
HERE = ARCHITECTURES.get(platform.machine(), platform.machine())
PLATFORMS = (HERE, "arm64" if HERE != "arm64" else "amd64")
ARTIFACT_TYPE = "application/vnd.eagle.test.artifact"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class ManifestTypesCase(LabTestCase):
    """A registry holding one image as every manifest type, an agent in front."""

    def setUp(self):
        self.need("docker-registry", "skopeo")
        self.tmp = self.tmpdir()
        self.registry = self.start(Registry(self.tmp / "registry"))
        url = self.registry.url
        self.image = image = small_image(self.tmp / "layout", layers=2, size=3 << 20)
        self.layers = [layer.digest for layer in image.layers]
        self.diff_ids = [layer.diff_id for layer in image.layers]
        index = add_platforms(image, PLATFORMS)
        # name: (the manifest's digest at the origin, its Content-Type)
        self.pushed = {
            "oci": (push(image, url, "eagle/oci", "1").manifest, OCI_MANIFEST),
            "v2s2": (
                push_as(image.layout, image.tag, url, "eagle/v2s2", "1", format="v2s2"),
                DOCKER_MANIFEST,
            ),
            "index": (
                push_as(
                    index.layout, index.tag, url, "eagle/index", "1", all_images=True
                ),
                OCI_INDEX,
            ),
            "list": (
                push_as(
                    index.layout,
                    index.tag,
                    url,
                    "eagle/list",
                    "1",
                    format="v2s2",
                    all_images=True,
                ),
                DOCKER_LIST,
            ),
        }
        self.index = index
        self.artifact_files = [b"an artifact's file\n" * 4096, b"and another\n"]
        for data in [*self.artifact_files, b"{}"]:
            self.registry.push_blob("eagle/artifact", data)
        manifest = artifact_manifest(ARTIFACT_TYPE, self.artifact_files)
        self.pushed["artifact"] = (
            self.registry.push_manifest("eagle/artifact", "1", manifest, OCI_MANIFEST),
            OCI_MANIFEST,
        )
        self.cluster = self.start(
            Cluster(self.tmp / "cluster", url, agents=1, aliases=["docker.io"])
        )
        self.agent = self.cluster.agents[0]

    def ref(self, name: str) -> str:
        return f"127.0.0.1:{self.agent.port}/eagle/{name}:1"

    def served_blobs(self) -> int:
        return self.agent.status()["served"]["blobs"]

    def children(self, name: str) -> dict[str, str]:
        """An index's or list's children at the origin: architecture to digest."""
        status, _, body = request(
            self.registry.port,
            "GET",
            f"/v2/eagle/{name}/manifests/1",
            {"Accept": ACCEPT_ALL},
        )
        self.assertEqual(status, 200)
        return {
            m["platform"]["architecture"]: m["digest"]
            for m in json.loads(body)["manifests"]
        }


class ManifestTypesTests(ManifestTypesCase):
    def test_pushed_types(self):
        """The origin holds each type as pushed; the agent answers every one by
        tag with the origin's bytes, Content-Type and digest."""
        for name, (digest, media_type) in self.pushed.items():
            path = f"/v2/eagle/{name}/manifests/1"
            origin = request(self.registry.port, "GET", path, {"Accept": ACCEPT_ALL})
            mine = request(self.agent.port, "GET", path, {"Accept": ACCEPT_ALL})
            self.assertEqual(origin[1]["content-type"], media_type, name)
            self.assertEqual(sha256(origin[2]), digest, name)
            self.assertEqual(mine[0], 200, name)
            self.assertEqual(mine[2], origin[2], name)
            self.assertEqual(mine[1]["content-type"], media_type, name)
            self.assertEqual(mine[1]["docker-content-digest"], digest, name)
        self.assertEqual(self.pushed["index"][0], self.index.digest)
        self.assertEqual(self.children("index"), self.index.images)
        self.assertEqual(sorted(self.children("list")), sorted(PLATFORMS))

    def test_skopeo(self):
        """skopeo pulls each type through the agent: the manifest it stores is
        the one pushed, byte for byte, and every blob matches its digest."""
        for name in ["oci", "v2s2", "artifact"]:
            dest = self.tmp / f"skopeo-{name}"
            layers = skopeo_pull(self.ref(name), dest)
            manifest = (dest / "manifest.json").read_bytes()
            self.assertEqual(sha256(manifest), self.pushed[name][0], name)
            if name == "artifact":
                self.assertEqual(json.loads(manifest)["artifactType"], ARTIFACT_TYPE)
                self.assertEqual(json.loads(manifest)["config"]["mediaType"], OCI_EMPTY)
                self.assertEqual(layers, [sha256(f) for f in self.artifact_files])
            else:
                self.assertEqual(layers, self.layers)
        for name in ["index", "list"]:
            # This machine's child, as a single image.
            dest = self.tmp / f"skopeo-{name}"
            self.assertEqual(skopeo_pull(self.ref(name), dest), self.layers)
            manifest = (dest / "manifest.json").read_bytes()
            self.assertEqual(sha256(manifest), self.children(name)[HERE], name)
            # And every platform, the index or list kept as it is.
            layout = self.tmp / f"skopeo-{name}-all"
            skopeo_all(self.ref(name), layout)
            top = (layout / "manifest.json").read_bytes()
            self.assertEqual(sha256(top), self.pushed[name][0])
            for digest in self.children(name).values():
                child = layout / f"{digest.split(':')[1]}.manifest.json"
                self.assertEqual(sha256(child.read_bytes()), digest)
        self.assertGreaterEqual(self.served_blobs(), len(self.layers))
        self.assertOriginSentLayersOnce()

    def test_docker(self):
        """dockerd pulls the schema 2 image, the index and the manifest list
        through the agent by its address: the image's digest is the one pushed,
        its layers the image's."""
        self.need("dockerd", "docker", "containerd", root=True)
        docker = self.start(Dockerd(self.tmp / "docker"))
        for name in ["v2s2", "index", "list", "oci"]:
            before = self.served_blobs()
            docker.pull(self.ref(name))
            repo = self.ref(name).rsplit(":", 1)[0]
            self.assertIn(
                f"{repo}@{self.pushed[name][0]}",
                docker.inspect(self.ref(name))["RepoDigests"],
                name,
            )
            self.assertEqual(docker.image_layers(self.ref(name)), self.diff_ids)
            if name == "v2s2":  # the first pull: the layers come from the agent
                self.assertGreaterEqual(self.served_blobs() - before, len(self.layers))
        self.assertOriginSentLayersOnce()

    def test_podman(self):
        """podman pulls the schema 2 image, the index and the manifest list
        through the agent by its address, with the digests pushed."""
        self.need("podman", root=True)
        podman = Podman(self.tmp / "podman")
        for name in ["v2s2", "index", "list"]:
            before = self.served_blobs()
            podman.pull(self.ref(name))
            # The three share their config, so they are one image to podman,
            # known by several names and digests.
            repo = self.ref(name).rsplit(":", 1)[0]
            self.assertIn(
                f"{repo}@{self.pushed[name][0]}",
                podman.inspect(self.ref(name))["RepoDigests"],
                name,
            )
            self.assertEqual(podman.image_layers(self.ref(name)), self.diff_ids)
            if name == "v2s2":
                self.assertGreaterEqual(self.served_blobs() - before, len(self.layers))
        self.assertOriginSentLayersOnce()

    def assertOriginSentLayersOnce(self) -> None:
        """Whatever pulled how often, the origin sent each layer once (to the
        seeder or the agent): the clients got them from the agent."""
        gets = self.registry.blob_gets()
        self.assertEqual(
            {d: gets.get(d, 0) for d in self.layers}, dict.fromkeys(self.layers, 1)
        )


class PodmanMirrorTests(LabTestCase):
    """Podman with the agent as the registries.conf mirror of docker.io."""

    def test_podman_pulls_through_the_agent_as_mirror(self):
        """``podman pull docker.io/library/eagle-demo:1`` goes to the agent (with
        ?ns=docker.io), which the origin stands behind as docker.io: every
        layer comes from the agent, the image is the one pushed."""
        self.need("docker-registry", "skopeo", "podman", root=True)
        tmp = self.tmpdir()
        registry = self.start(Registry(tmp / "registry"))
        image = small_image(tmp / "layout", layers=2, size=3 << 20)
        push(image, registry.url, "library/eagle-demo", "1")
        cluster = self.start(
            Cluster(tmp / "cluster", registry.url, agents=1, aliases=["docker.io"])
        )
        agent = cluster.agents[0]
        podman = Podman(
            tmp / "podman", mirrors={"docker.io": f"127.0.0.1:{agent.port}"}
        )
        ref = "docker.io/library/eagle-demo:1"
        podman.pull(ref)
        self.assertEqual(podman.inspect(ref)["Digest"], image.manifest)
        self.assertEqual(podman.image_layers(ref), [x.diff_id for x in image.layers])
        served = agent.status()["served"]
        self.assertGreaterEqual(served["blobs"], len(image.layers) + 1)  # + config
        self.assertGreaterEqual(served["manifests"], 1)
        self.assertServedOnce(registry, image)


def skopeo_all(ref: str, layout: Path) -> None:
    """Copy an index or list with every image in it into a directory."""
    argv = ["skopeo", "--insecure-policy", "copy", "--quiet", "--all"]
    argv += ["--src-tls-verify=false", "--src-no-creds", "--preserve-digests"]
    argv += [f"docker://{ref}", f"dir:{layout}"]
    run(argv, env=offline_env())
