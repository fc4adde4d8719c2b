"""Emulated hosts on one private network: Linux network namespaces on a bridge.

`Network` makes one namespace per host and one more, the *switch*, that holds a
Linux bridge. Each host has a veth pair: ``eth0`` inside the host with its address,
the other end a port of the bridge in the switch. A host's speed is a ``tc tbf``
rate on both ends of its veth: egress of ``eth0`` is what the host sends, egress of
the bridge port is what it receives. Loopback is up in every host.

Zones. Given ``zones`` (each host's zone), the switch holds one bridge per zone,
each host plugged into its zone's, and every zone after the first is joined to the
first zone's bridge by a veth pair with a ``tc tbf`` at ``zone_rate`` on both ends:
that pair is the inter-zone path, and its counters (`Network.zone_counters`) are
the bytes that crossed it. All zones share the one subnet.

Containment. The hosts' subnet (`SUBNET`, an RFC 1918 /24) exists only inside
these namespaces: the bridge lives in its own namespace, the root namespace gets no
address and no link in it, and the hosts have no route but their own /24. Packets
to any other address fail at once with "network unreachable". While a network is
up, the root namespace also gets a ``blackhole`` route for the subnet, so that a
program that mistakenly addresses a host from outside fails instead of sending the
packet along the default route.

Reaching the hosts. Processes run inside a host with ``ip netns exec <ns> argv``
(`Host.argv`, `Host.popen`). Python code that must talk to a host, such as a
readiness check, runs on a thread that joined the host's namespace (`Host.call`):
network namespaces are per thread, so the rest of the process is untouched.

Cleanup. Names are ``<prefix>-<pid>-<n>-<host>``, so runs never collide. Leaving
the ``with`` block, also after an exception, Ctrl-C or SIGTERM, kills every process
left in the namespaces and deletes them (and the veths and bridge with them).
Entering it first removes what crashed earlier runs with the same prefix left
behind: namespaces and blackhole routes whose pid is no longer alive.
"""

from __future__ import annotations

import ctypes
import ipaddress
import itertools
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from eagle.lab import LabError, run, unavailable

__all__ = [
    "PREFIX",
    "SUBNET",
    "Host",
    "Network",
    "cleanup_stale",
    "netns_unavailable",
]

PREFIX = "eaglenet"
#: RFC 1918, and only ever inside the namespaces a `Network` makes.
SUBNET = "10.251.0.0/24"
CLONE_NEWNET = 0x40000000
#: How long processes get after SIGTERM before SIGKILL at teardown.
KILL_GRACE = 5.0

_libc = ctypes.CDLL(None, use_errno=True)
_sequence = itertools.count()
# Networks of this process on each subnet, which share one blackhole route.
_blackhole_users: dict[str, int] = {}
_blackhole_lock = threading.Lock()


def netns_unavailable() -> str | None:
    """Why namespaces cannot be made here (missing tools, not root), or None."""
    return unavailable("ip", "tc", root=True)


def _ip(*args: str, namespace: str | None = None, timeout: float = 30) -> str:
    argv = ["ip"] + (["-n", namespace] if namespace else []) + list(args)
    return run(argv, timeout=timeout)


def _tc(namespace: str, *args: str) -> str:
    return run(["tc", "-n", namespace, *args], timeout=30)


def _namespaces() -> list[str]:
    """Names of all named network namespaces."""
    try:
        listing = json.loads(_ip("-j", "netns", "list") or "[]")
    except ValueError:
        listing = []
    return [entry["name"] for entry in listing]


def _pids_in(namespace: str) -> list[int]:
    done = subprocess.run(
        ["ip", "netns", "pids", namespace], capture_output=True, text=True
    )
    return [int(word) for word in done.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_all_in(namespaces: Sequence[str], grace: float = KILL_GRACE) -> None:
    """SIGTERM every process in these namespaces, then SIGKILL what remains."""
    me = os.getpid()
    pids = {p for ns in namespaces for p in _pids_in(ns) if p != me}
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if _alive(p)}
        time.sleep(0.05)
    for pid in pids:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _delete_namespaces(namespaces: Sequence[str]) -> None:
    _kill_all_in(namespaces)
    for namespace in namespaces:
        subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)


def _blackholes(subnet: str) -> list[int]:
    """Metrics of the root namespace's blackhole routes for ``subnet``."""
    try:
        routes = json.loads(_ip("-j", "route", "show", "type", "blackhole") or "[]")
    except (LabError, ValueError):
        return []
    return [int(r.get("metric", 0)) for r in routes if r.get("dst") == subnet]


def _remove_blackhole(subnet: str, metric: int) -> None:
    subprocess.run(
        ["ip", "route", "del", "blackhole", subnet, "metric", str(metric)],
        capture_output=True,
    )


def cleanup_stale(prefix: str = PREFIX, subnet: str = SUBNET) -> list[str]:
    """Delete what dead runs with this prefix left: their namespaces (and every
    process still in them) and their blackhole routes. Returns the namespaces."""
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)-")
    stale = []
    for name in _namespaces():
        match = pattern.match(name)
        if match and not _alive(int(match[1])):
            stale.append(name)
    if stale:
        _delete_namespaces(stale)
    for metric in _blackholes(subnet):
        if metric and not _alive(metric):
            _remove_blackhole(subnet, metric)
    return stale


class Host:
    """One emulated host: a network namespace with ``eth0`` at ``ip``."""

    interface = "eth0"

    def __init__(
        self, name: str, namespace: str, ip: str, rate: int | None, zone: str = ""
    ):
        self.name = name
        self.namespace = namespace
        self.ip = ip
        self.rate = rate  # bits per second, both ways; None: no limit
        self.zone = zone  # its zone's name; "": the network has no zones
        self.port: str | None = None  # its veth's end on the bridge
        self._threads: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.ip} in {self.namespace}>"

    def argv(self, argv: Sequence[str | os.PathLike]) -> list[str]:
        """A command line that runs ``argv`` inside this host."""
        return ["ip", "netns", "exec", self.namespace, *map(str, argv)]

    def popen(self, argv: Sequence[str | os.PathLike], **options) -> subprocess.Popen:
        """Start ``argv`` inside this host."""
        return subprocess.Popen(self.argv(argv), **options)

    def run(self, argv: Sequence[str | os.PathLike], timeout: float = 60) -> str:
        """Run ``argv`` inside this host to completion; its stdout."""
        return run(self.argv(argv), timeout=timeout)

    def call(self, function: Callable[..., Any], *args, timeout: float = 120, **kw):
        """Run ``function(*args, **kw)`` on a thread inside this host's network
        namespace and return its result (or raise its exception). Sockets it opens
        belong to the host; ``timeout`` bounds the wait."""
        with self._lock:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(
                    max_workers=4,
                    thread_name_prefix=f"netns-{self.name}",
                    initializer=_enter_namespace,
                    initargs=(self.namespace,),
                )
            threads = self._threads
        return threads.submit(function, *args, **kw).result(timeout)

    def counters(self) -> dict[str, int]:
        """Bytes through ``eth0`` so far: ``{"rx": .., "tx": ..}`` (IP packets with
        their headers, as the interface counts them)."""
        links = json.loads(
            _ip(
                "-j",
                "-s",
                "link",
                "show",
                "dev",
                self.interface,
                namespace=self.namespace,
            )
        )
        stats = links[0]["stats64"]
        return {"rx": int(stats["rx"]["bytes"]), "tx": int(stats["tx"]["bytes"])}

    def close(self) -> None:
        """Let go of the threads that joined the namespace (without waiting for
        a call still running: its own timeout ends it)."""
        with self._lock:
            threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=False, cancel_futures=True)


def _enter_namespace(namespace: str) -> None:
    """Move the calling thread into a named network namespace."""
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {namespace}: {os.strerror(errno)}")
    finally:
        os.close(fd)


def tbf(rate: int) -> list[str]:
    """``tc`` arguments of a token bucket at ``rate`` bits per second.

    The bucket holds 2 ms of traffic (at least 64 KiB, enough for the 64 KiB
    segments veth hands over with offloads on); packets wait up to 50 ms.
    """
    burst = max(64 * 1024, rate // 8 // 500)
    return ["tbf", "rate", f"{rate}bit", "burst", str(burst), "latency", "50ms"]


class Network:
    """Emulated hosts on a bridge, each at its own rate; a context manager.

    ``hosts`` maps each host's name to its rate in bits per second (None: no
    limit). Addresses are handed out in order from ``subnet``, the first host
    getting ``.1``; `hosts` maps names to the `Host` objects once entered.

    ``zones``, if given, maps every host's name to its zone's name; zones are
    ordered by their first host, and the first is the hub the others are joined
    to by a path at ``zone_rate`` bits per second each way (None: no limit).
    """

    def __init__(
        self,
        hosts: dict[str, int | None],
        *,
        zones: dict[str, str] | None = None,
        zone_rate: int | None = None,
        subnet: str = SUBNET,
        prefix: str = PREFIX,
    ):
        network = ipaddress.ip_network(subnet)
        if not network.is_private or network.version != 4:
            raise ValueError(f"{subnet} is not a private IPv4 network")
        addresses = list(network.hosts())
        if len(hosts) > len(addresses):
            raise ValueError(f"{subnet} has no room for {len(hosts)} hosts")
        for name in hosts:
            if not re.fullmatch(r"[a-z][a-z0-9]{0,11}", name):
                raise ValueError(
                    f"host name {name!r}: 1-12 of [a-z0-9], a letter first"
                )
        zones = zones or {}
        if zones and set(zones) != set(hosts):
            raise ValueError("zones must name the zone of every host, and no more")
        #: The zones' names, the hub first; [""] without zones.
        named = [zones[name] for name in hosts] if zones else [""]
        self.zones = list(dict.fromkeys(named))
        self.zone_rate = zone_rate
        self.subnet = str(network)
        self.prefix = prefix
        self.run_id = f"{prefix}-{os.getpid()}-{next(_sequence)}"
        self.switch = f"{self.run_id}-switch"
        self.hosts = {
            name: Host(
                name, f"{self.run_id}-{name}", str(address), rate, zones.get(name, "")
            )
            for (name, rate), address in zip(hosts.items(), addresses, strict=False)
        }
        self._created: list[str] = []
        self._blackhole: int | None = None
        self._handlers: dict[int, Any] = {}
        self.up = False

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    # Setting up

    def start(self) -> Network:
        """Make the switch and the hosts; on any failure undo what was made."""
        reason = netns_unavailable()
        if reason:
            raise LabError(f"network namespaces: {reason}")
        cleanup_stale(self.prefix, self.subnet)
        try:
            self._guard_root_namespace()
            self._add_namespace(self.switch)
            _ip("link", "set", "lo", "up", namespace=self.switch)
            for index in range(len(self.zones)):
                bridge = self._bridge(self.zones[index])
                _ip("link", "add", bridge, "type", "bridge", namespace=self.switch)
                _ip("link", "set", bridge, "up", namespace=self.switch)
                if index:
                    self._join_zone(index)
            for index, host in enumerate(self.hosts.values()):
                self._add_host(index, host)
            self.up = True
        except BaseException:
            self.stop()
            raise
        return self

    def _guard_root_namespace(self) -> None:
        """Refuse a subnet the root namespace routes anywhere but its default route,
        then blackhole it there for as long as the network is up."""
        for route in json.loads(_ip("-j", "route", "show") or "[]"):
            dst = route.get("dst", "default")
            if dst == "default" or route.get("type") == "blackhole":
                continue
            try:
                overlaps = ipaddress.ip_network(dst, strict=False).overlaps(
                    ipaddress.ip_network(self.subnet)
                )
            except ValueError:
                continue
            if overlaps:
                raise LabError(
                    f"{self.subnet} is in use on this machine (route {dst}); "
                    "choose another subnet"
                )
        metric = os.getpid()
        with _blackhole_lock:
            users = _blackhole_users.get(self.subnet, 0)
            if not users and metric not in _blackholes(self.subnet):
                _ip("route", "add", "blackhole", self.subnet, "metric", str(metric))
            _blackhole_users[self.subnet] = users + 1
            self._blackhole = metric

    def _add_namespace(self, namespace: str) -> None:
        _ip("netns", "add", namespace)
        self._created.append(namespace)

    def _bridge(self, zone: str) -> str:
        """The name of a zone's bridge in the switch."""
        return f"br{self.zones.index(zone)}"

    @staticmethod
    def _zone_ends(index: int) -> tuple[str, str]:
        """The names of the inter-zone veth's ends: on the hub's bridge, and on
        zone ``index``'s."""
        return f"x0-{index}", f"x{index}-0"

    def _join_zone(self, index: int) -> None:
        """Join zone ``index``'s bridge to the hub's by a veth pair with a token
        bucket at the inter-zone rate on both ends (each end's egress is one way)."""
        hub_end, zone_end = self._zone_ends(index)
        _ip(
            "link",
            "add",
            hub_end,
            "type",
            "veth",
            "peer",
            "name",
            zone_end,
            namespace=self.switch,
        )
        for end, bridge in ((hub_end, "br0"), (zone_end, f"br{index}")):
            _ip("link", "set", end, "master", bridge, "up", namespace=self.switch)
            if self.zone_rate:
                _tc(
                    self.switch,
                    "qdisc",
                    "replace",
                    "dev",
                    end,
                    "root",
                    *tbf(self.zone_rate),
                )

    def _add_host(self, index: int, host: Host) -> None:
        self._add_namespace(host.namespace)
        port = host.port = f"p{index}"  # the host's end, on the bridge
        _ip(
            "link",
            "add",
            host.interface,
            "netns",
            host.namespace,
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            self.switch,
        )
        bridge = self._bridge(host.zone)
        _ip("link", "set", port, "master", bridge, "up", namespace=self.switch)
        prefixlen = ipaddress.ip_network(self.subnet).prefixlen
        _ip(
            "addr",
            "add",
            f"{host.ip}/{prefixlen}",
            "dev",
            host.interface,
            namespace=host.namespace,
        )
        _ip("link", "set", "lo", "up", namespace=host.namespace)
        _ip("link", "set", host.interface, "up", namespace=host.namespace)
        if host.rate:
            # What the host sends, then what it receives.
            _tc(
                host.namespace,
                "qdisc",
                "replace",
                "dev",
                host.interface,
                "root",
                *tbf(host.rate),
            )
            _tc(self.switch, "qdisc", "replace", "dev", port, "root", *tbf(host.rate))

    # Tearing down

    def stop(self) -> None:
        """Kill every process in the hosts, delete the namespaces and the route.

        Safe to call more than once; Ctrl-C and SIGTERM wait until it is done.
        """
        previous = _ignore_signals()
        try:
            created, self._created = self._created, []
            # Processes first: a call waiting on one of them then fails at once.
            _kill_all_in(created)
            for host in self.hosts.values():
                host.close()
            _delete_namespaces(created)
            if self._blackhole is not None:
                with _blackhole_lock:
                    users = _blackhole_users.get(self.subnet, 1) - 1
                    _blackhole_users[self.subnet] = users
                    if not users:
                        _remove_blackhole(self.subnet, self._blackhole)
                self._blackhole = None
            self.up = False
        finally:
            _restore_signals(previous)

    def link_counters(self) -> dict[str, dict[str, int]]:
        """Bytes each host has received (``rx``) and sent (``tx``) so far, read
        on the bridges' ports in one go (a port sends what its host receives)."""
        hosts = {host.port: name for name, host in self.hosts.items()}
        counters = {}
        for port in self._switch_links():
            name = hosts.get(port["ifname"])
            if name is not None:
                stats = port["stats64"]
                counters[name] = {
                    "rx": int(stats["tx"]["bytes"]),
                    "tx": int(stats["rx"]["bytes"]),
                }
        return counters

    def zone_counters(self) -> dict[str, dict[str, int]]:
        """Bytes that crossed the inter-zone path so far, per zone but the hub:
        ``{zone: {"in": .., "out": ..}}``, into the zone from the hub and out of it
        to the hub (Ethernet frames, as the veth counts them). Empty without
        zones."""
        links = {link["ifname"]: link["stats64"] for link in self._switch_links()}
        counters = {}
        for index, zone in enumerate(self.zones[1:], start=1):
            hub_end, zone_end = self._zone_ends(index)
            counters[zone] = {
                "in": int(links[hub_end]["tx"]["bytes"]),
                "out": int(links[zone_end]["tx"]["bytes"]),
            }
        return counters

    def _switch_links(self) -> list[dict]:
        """Every link in the switch, with its counters, as ``ip -j -s`` lists."""
        return json.loads(_ip("-j", "-s", "link", "show", namespace=self.switch))

    def namespaces(self) -> list[str]:
        """The namespaces this network made and has not deleted yet."""
        return list(self._created)

    def __enter__(self) -> Network:
        self._handlers = _terminate_on_sigterm()
        try:
            return self.start()
        except BaseException:
            _restore_signals(self._handlers)
            raise

    def __exit__(self, *exc_info) -> None:
        try:
            self.stop()
        finally:
            _restore_signals(self._handlers)


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _terminate_on_sigterm() -> dict[int, Any]:
    """Make SIGTERM unwind the stack (running ``finally`` and ``__exit__``) like
    Ctrl-C does; only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_sigterm)}


def _ignore_signals() -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {
        signum: signal.signal(signum, signal.SIG_IGN)
        for signum in (signal.SIGINT, signal.SIGTERM)
    }


def _restore_signals(handlers: dict[int, Any]) -> None:
    for signum, handler in handlers.items():
        if handler is not None:
            signal.signal(signum, handler)
