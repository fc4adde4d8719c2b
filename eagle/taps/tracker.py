"""``twist eagle-tracker --config FILE``."""

from eagle.taps import Options
from eagle.taps import make_tracker as makeService

__all__ = ["Options", "makeService"]
