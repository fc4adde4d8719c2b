"""``twist eagle-agent --config FILE``."""

from eagle.taps import Options
from eagle.taps import make_agent as makeService

__all__ = ["Options", "makeService"]
