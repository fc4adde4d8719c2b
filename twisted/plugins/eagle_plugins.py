"""The ``twist`` plugins of Eagle's daemons. Kept tiny: importing this file must not
import Eagle itself, since Twisted imports every plugin file to list them."""

from twisted.application.service import ServiceMaker

eagle_tracker = ServiceMaker(
    "Eagle tracker",
    "eagle.taps.tracker",
    "BitTorrent tracker for blobs",
    "eagle-tracker",
)
eagle_seeder = ServiceMaker(
    "Eagle seeder",
    "eagle.taps.seeder",
    "Fetches blobs once and seeds them",
    "eagle-seeder",
)
eagle_agent = ServiceMaker(
    "Eagle agent", "eagle.taps.agent", "Registry mirror and swarm peer", "eagle-agent"
)
eagle_proxy = ServiceMaker(
    "Eagle proxy", "eagle.taps.proxy", "Registry mirror over HTTP only", "eagle-proxy"
)
