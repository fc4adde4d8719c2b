"""Daemon configuration: sizes, defaults, and clear errors for what is wrong."""

import os
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from eagle import config

ETC = Path(__file__).resolve().parent.parent / "etc"


class SizeTests(SynchronousTestCase):
    def test_units(self):
        """Decimal and binary units, any case, with or without B and spaces."""
        for text, size in [
            ("512MiB", 512 * 1024**2),
            ("10GB", 10 * 10**9),
            ("10G", 10 * 10**9),
            ("1.5GiB", 3 * 1024**3 // 2),
            ("1k", 1000),
            ("1KiB", 1024),
            ("2 mb", 2 * 10**6),
            ("1TiB", 1024**4),
            ("100", 100),
            ("0", 0),
        ]:
            self.assertEqual(config.parse_size(text), size, text)
            self.assertIsInstance(config.parse_size(text), config.ByteSize)

    def test_numbers(self):
        """A plain YAML number is a count of bytes."""
        self.assertEqual(config.parse_size(4096), 4096)

    def test_not_sizes(self):
        """Garbage, negative sizes and booleans are errors, not zero or one."""
        for value in ["", "MiB", "-1", "1e9", "ten", "5 XB", "1,5G", -5, True, None]:
            self.assertRaises(ValueError, config.parse_size, value)


class FromDictTests(SynchronousTestCase):
    def test_defaults(self):
        """An empty config is valid and takes every default."""
        node = config.from_dict({}, config.NodeConfig)
        self.assertEqual(node.cache_size, 10 * 1024**3)
        self.assertEqual((node.registries, node.seeders, node.labels), ([], [], {}))
        self.assertEqual(config.from_dict({}, config.TrackerConfig).interval, 15)

    def test_node(self):
        """Sizes in text, registries and labels are read into their types."""
        node = config.from_dict(
            {
                "cache_size": "512MiB",
                "swarm_min_size": "4MB",
                "registries": [{"host": "docker.io", "url": "https://r.example"}],
                "labels": {"zone": "a"},
            },
            config.NodeConfig,
        )
        self.assertEqual((node.cache_size, node.swarm_min_size), (512 << 20, 4 * 10**6))
        self.assertEqual(
            node.registries, [config.Registry("docker.io", "https://r.example")]
        )
        self.assertEqual(node.labels, {"zone": "a"})

    def test_storage(self):
        """A seeder's S3 storage, with sizes in text."""
        node = config.from_dict(
            {
                "storage": {
                    "backend": "s3",
                    "s3": {"bucket": "b", "multipart_threshold": "8MiB"},
                }
            },
            config.NodeConfig,
        )
        self.assertEqual(node.storage.s3.bucket, "b")
        self.assertEqual(node.storage.s3.multipart_threshold, 8 << 20)
        self.assertIsNone(config.from_dict({}, config.NodeConfig).storage)

    def test_errors(self):
        """Unknown keys (also nested), wrong types, bad sizes and a non-mapping are
        ConfigErrors that name the problem."""
        for data, words in [
            ({"cache_sise": "1GiB"}, "cache_sise"),
            ({"registries": [{"host": "a", "url": "b", "user": "c"}]}, "user"),
            ({"registries": [{"host": "a"}]}, "url"),
            ({"interval": "soon"}, "interval"),
            ({"cache_size": "lots"}, "lots"),
            ({"cache_size": -1}, "-1"),
            ({"labels": {"zone": 1}}, "labels"),
            ([1, 2], "mapping"),
            ("listen: here", "mapping"),
            ({"storage": {"backend": "nfs"}}, "nfs"),
            ({"storage": {"backend": "filesystem"}}, "directory"),
            ({"storage": {"backend": "s3"}}, "s3 section"),
            ({"storage": {"backend": "s3", "s3": {"endpoint_url": "x"}}}, "bucket"),
            ({"storage": {"directory": "/d", "threads": 0}}, "threads"),
        ]:
            kind = config.TrackerConfig if "interval" in data else config.NodeConfig
            error = self.assertRaises(config.ConfigError, config.from_dict, data, kind)
            self.assertIn(words, str(error), data)


class LoadTests(SynchronousTestCase):
    def write(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_load(self):
        """A YAML file names only what differs from the defaults."""
        path = self.write(b"cache_size: 10GB\nlisten: tcp:0\n")
        node = config.load(path, config.NodeConfig)
        self.assertEqual((node.cache_size, node.listen), (10**10, "tcp:0"))

    def test_empty_file(self):
        """An empty file is the defaults."""
        self.assertEqual(
            config.load(self.write(b""), config.TrackerConfig), config.TrackerConfig()
        )

    def test_unreadable(self):
        """A missing file, a directory, bad YAML, binary bytes or a list at the top
        are ConfigErrors, not tracebacks."""
        for path in [
            os.path.join(self.mktemp(), "missing.yaml"),
            os.path.dirname(self.write(b"")),
            self.write(b"listen: [\n"),
            self.write(b"\xff\xfe\x00\xff garbage"),
            self.write(b"\x80\x81\x82: 1\n"),
            self.write(b"- a\n- b\n"),
            self.write(b"just a string\n"),
        ]:
            self.assertRaises(config.ConfigError, config.load, path, config.NodeConfig)


class ExampleConfigTests(SynchronousTestCase):
    def test_examples_load(self):
        """Every example config under etc/ loads cleanly as its daemon's config."""
        examples = sorted(ETC.glob("*.yaml"))
        if not examples:
            raise SkipTest("no example configs under etc/ yet")
        for path in examples:
            kind = config.TrackerConfig if "tracker" in path.name else config.NodeConfig
            loaded = config.load(str(path), kind)
            self.assertIsInstance(loaded, kind, path.name)
            if kind is config.NodeConfig:
                self.assertGreater(loaded.cache_size, 0, path.name)
