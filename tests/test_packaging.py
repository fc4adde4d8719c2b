"""What a plain checkout and install offer: the twist plugins and example configs."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import TestCase

from eagle import config

ROOT = Path(__file__).resolve().parent.parent
ETC = ROOT / "etc"


class PackagingTests(TestCase):
    def test_twist_lists_the_daemons(self):
        """``twist --help`` names all four daemons, found as plugins."""
        twist = Path(sys.executable).with_name("twist")
        listing = subprocess.run(
            [twist, "--help"], capture_output=True, text=True, timeout=60, cwd="/"
        ).stdout
        for name in ("eagle-agent", "eagle-proxy", "eagle-seeder", "eagle-tracker"):
            self.assertIn(name, listing)

    def test_example_configs_load(self):
        """Each example config in etc/ loads without errors."""
        kinds = {
            "tracker.yaml": config.TrackerConfig,
            "tracker-redis.yaml": config.TrackerConfig,
            "seeder.yaml": config.NodeConfig,
            "agent.yaml": config.NodeConfig,
            "proxy.yaml": config.NodeConfig,
        }
        for name, kind in kinds.items():
            config.load(str(ETC / name), kind)

    def test_supervisord_config_names_real_files(self):
        """The supervisord cluster runs each daemon on a config that exists."""
        parser = configparser.RawConfigParser()
        parser.read(ETC / "supervisord.conf")
        programs = [s for s in parser.sections() if s.startswith("program:")]
        self.assertEqual(
            sorted(programs),
            [
                "program:eagle-agent",
                "program:eagle-proxy",
                "program:eagle-seeder",
                "program:eagle-tracker",
                "program:registry",
            ],
        )
        for section in programs:
            command = parser.get(section, "command").replace("%(here)s", str(ETC))
            for word in command.split():
                if word.endswith((".yaml", ".yml")):
                    self.assertTrue(Path(word).is_file(), word)
