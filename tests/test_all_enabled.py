"""The main job with everything of an agent under real conditions switched on: a
real image in a registry that asks for credentials (htpasswd), pulled by skopeo
with them through three agents that have speed limits (host and per blob),
resume data saved every second, and a short stall timeout. Real processes on
loopback."""

from __future__ import annotations

from eagle.lab import LabError
from eagle.lab.cluster import Cluster
from eagle.lab.engines import skopeo_pull
from eagle.lab.image import push, real_image
from eagle.lab.registry import Registry
from tests.test_lab import LabTestCase

USER, PASSWORD = "puller", "s3cret-pw"
AGENT_CONFIG = {
    "download_limit": "200MiB",
    "upload_limit": "200MiB",
    "blob_download_limit": "100MiB",
    "blob_upload_limit": "100MiB",
    "resume_interval": 1,
    "swarm_timeout": 10,
}


class AllEnabledTests(LabTestCase):
    def test_private_image_through_limited_agents(self):
        """Without credentials the agent answers 401; with them every agent
        pulls the whole image, each layer leaves the origin once, the counts by
        source add up, and later agents get bytes from peers."""
        self.need("docker-registry", "skopeo")
        tmp = self.tmpdir()
        auth = {"user": USER, "password": PASSWORD}
        registry = self.start(Registry(tmp / "registry", auth=auth))
        creds = f"{USER}:{PASSWORD}"
        image = real_image()
        push(image, registry.url, "eagle/demo", "1", creds=creds)
        cluster = self.start(
            Cluster(tmp / "cluster", registry.url, agents=3, agent_config=AGENT_CONFIG)
        )
        layers = sorted(layer.digest for layer in image.layers)
        first = f"127.0.0.1:{cluster.agents[0].port}/eagle/demo:1"
        with self.assertRaises(LabError) as refused:
            skopeo_pull(first, tmp / "anonymous")
        self.assertIn("unauthorized", str(refused.exception))
        for agent in cluster.agents:
            ref = f"127.0.0.1:{agent.port}/eagle/demo:1"
            pulled = skopeo_pull(ref, tmp / f"skopeo-{agent.name}", creds=creds)
            self.assertEqual(layers, sorted(pulled))
        self.assertServedOnce(registry, image)
        blobs = image.size + image.blob(image.config).stat().st_size
        for agent in cluster.agents:
            stats = agent.status()
            received = stats["received"]
            self.assertEqual(sum(received.values()), blobs, (agent.name, received))
            self.assertEqual(stats["fallbacks"], {}, agent.name)
        for agent in cluster.agents[1:]:
            received = agent.status()["received"]
            self.assertGreater(received.get("peer", 0), 0, (agent.name, received))
