"""Eagle: peer-to-peer distribution of container image blobs over BitTorrent."""

__version__ = "0.1.0"
