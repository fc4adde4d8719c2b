"""A real image pulled peer to peer: registry, tracker, seeder and three agents as
real processes on loopback, and skopeo, podman and dockerd pulling through them."""

from __future__ import annotations

from eagle.lab.cluster import Cluster
from eagle.lab.engines import Containerd, Dockerd, Podman, skopeo_pull
from eagle.lab.image import push, real_image
from eagle.lab.registry import Registry
from tests.test_lab import LabTestCase


class PeerToPeerPullTests(LabTestCase):
    def test_every_engine_pulls_through_every_agent(self):
        """Each layer leaves the origin once; later agents get bytes from peers."""
        self.need(
            "docker-registry", "skopeo", "podman", "dockerd", "containerd", root=True
        )
        tmp = self.tmpdir()
        registry = self.start(Registry(tmp / "registry"))
        image = real_image()
        push(image, registry.url, "eagle/demo", "1")
        push(image, registry.url, "library/eagle-demo", "1")
        cluster = Cluster(
            tmp / "cluster", registry.url, agents=3, aliases=["docker.io"]
        )
        self.start(cluster)
        layers = [layer.digest for layer in image.layers]

        for agent in cluster.agents:
            ref = f"127.0.0.1:{agent.port}/eagle/demo:1"
            pulled = skopeo_pull(ref, tmp / f"skopeo-{agent.name}")
            self.assertEqual(sorted(layers), sorted(pulled))

        podman = Podman(tmp / "podman")
        podman.pull(f"127.0.0.1:{cluster.agents[1].port}/eagle/demo:1")

        docker = self.start(Dockerd(tmp / "docker", mirrors=[cluster.agents[0].url]))
        docker.pull(f"127.0.0.1:{cluster.agents[2].port}/eagle/demo:1")
        docker.pull("eagle-demo:1")  # a Docker Hub name, through registry-mirrors
        diff_ids = [layer.diff_id for layer in image.layers]
        self.assertEqual(docker.image_layers("eagle-demo:1"), diff_ids)
        self.assertEqual(
            podman.image_layers(f"127.0.0.1:{cluster.agents[1].port}/eagle/demo:1"),
            diff_ids,
        )

        containerd = self.start(Containerd(tmp / "containerd"))
        containerd.mirror("docker.io", cluster.agents[2].url)
        containerd.pull("docker.io/library/eagle-demo:1")  # sends ?ns=docker.io
        self.assertEqual(
            sorted(containerd.image_layers("docker.io/library/eagle-demo:1")),
            sorted(layers),
        )

        self.assertServedOnce(registry, image)
        # Each agent fetched each blob once, from wherever: its counts by source
        # add up to the blobs exactly (the config blob comes over HTTP).
        blobs = image.size + image.blob(image.config).stat().st_size
        for agent in cluster.agents:
            received = agent.status()["received"]
            self.assertEqual(sum(received.values()), blobs, (agent.name, received))
        for agent in cluster.agents[1:]:
            received = agent.status()["received"]
            self.assertGreater(received.get("peer", 0), 0, (agent.name, received))
