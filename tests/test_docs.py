"""docs/: the configuration reference lists exactly the schema's keys with their
defaults, and every page is valid reStructuredText."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import yaml
from docutils.core import publish_doctree
from twisted.trial.unittest import TestCase

from eagle import config

DOCS = Path(__file__).parent.parent / "docs"
ENTRY = re.compile(r"^``([a-z0-9_]+)``: .+?, (?:default ``(.*)``|required)$")
MARKER = re.compile(r"^\.\. eagle-config: (\w+)$")


def documented() -> dict[str, dict[str, object]]:
    """{class name: {key: documented default, or MISSING when required}}."""
    sections: dict[str, dict] = {}
    current = None
    for line in (DOCS / "configuration.rst").read_text().splitlines():
        marker = MARKER.match(line)
        if marker:
            current = sections.setdefault(marker[1], {})
            continue
        entry = ENTRY.match(line)
        if entry and current is not None:
            key, default = entry.groups()
            current[key] = dataclasses.MISSING if default is None else default
    return sections


def default_of(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


class ConfigurationReferenceTests(TestCase):
    def test_every_key_with_its_default(self):
        """Each config dataclass has its section, listing all its keys and no
        others, each with the schema's default (or marked required)."""
        sections = documented()
        classes = [
            config.TrackerConfig,
            config.RedisConfig,
            config.NodeConfig,
            config.Registry,
            config.StorageConfig,
            config.S3Config,
            config.ManholeConfig,
        ]
        self.assertEqual(set(sections), {c.__name__ for c in classes})
        for kind in classes:
            fields = {f.name: f for f in dataclasses.fields(kind)}
            docs = sections[kind.__name__]
            self.assertEqual(list(docs), list(fields), kind.__name__)
            for name, field in fields.items():
                expected = default_of(field)
                written = docs[name]
                if expected is dataclasses.MISSING or written is dataclasses.MISSING:
                    self.assertIs(written, expected, f"{kind.__name__}.{name}")
                    continue
                value = yaml.safe_load(written)
                if field.type is config.ByteSize:
                    value = config.parse_size(value)
                self.assertEqual(value, expected, f"{kind.__name__}.{name}")

    def test_nested_sections_are_reachable(self):
        """Every documented nested mapping is a field of a documented class."""
        node = {f.name: f.type for f in dataclasses.fields(config.NodeConfig)}
        tracker = {f.name: f.type for f in dataclasses.fields(config.TrackerConfig)}
        self.assertIn("Registry", str(node["registries"]))
        self.assertIn("RedisConfig", str(tracker["redis"]))
        self.assertIn("ManholeConfig", str(node["manhole"]))
        self.assertIn("StorageConfig", str(node["storage"]))
        storage = {f.name: f.type for f in dataclasses.fields(config.StorageConfig)}
        self.assertIn("S3Config", str(storage["s3"]))
        self.assertIn("ManholeConfig", str(tracker["manhole"]))


class RestructuredTextTests(TestCase):
    def test_pages_parse(self):
        """Every page in docs/ and the README is reStructuredText without errors
        or warnings."""
        pages = [*DOCS.glob("*.rst"), DOCS.parent / "README.rst"]
        for page in pages:
            messages = []
            publish_doctree(
                page.read_text(),
                source_path=str(page),
                settings_overrides={
                    "report_level": 2,
                    "halt_level": 5,
                    "warning_stream": _Collect(messages),
                },
            )
            self.assertEqual(messages, [], page.name)


class _Collect:
    def __init__(self, messages: list):
        self.messages = messages

    def write(self, text: str) -> None:
        if text.strip():
            self.messages.append(text.strip())

    def flush(self) -> None:
        pass
