"""``twist eagle-seeder --config FILE``."""

from eagle.taps import Options
from eagle.taps import make_seeder as makeService

__all__ = ["Options", "makeService"]
