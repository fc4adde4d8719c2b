"""``twist eagle-proxy --config FILE``."""

from eagle.taps import Options
from eagle.taps import make_proxy as makeService

__all__ = ["Options", "makeService"]
