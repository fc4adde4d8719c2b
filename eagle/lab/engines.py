"""Container engines as clients of a registry: skopeo, Podman, Docker, containerd.

Each keeps all its state in a directory of its own (no system daemon, socket,
storage or config file is shared) and reaches only loopback and the registries it
is told about (see `eagle.lab.offline_env`). Storage is ``vfs`` / ``native``: plain
directories, no overlay mounts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from eagle.lab import (
    LabError,
    Service,
    hostname,
    offline_env,
    run,
    unavailable,
    unmount_under,
)

__all__ = [
    "Containerd",
    "Dockerd",
    "Podman",
    "skopeo_pull",
    "unavailable",
]

#: Longest path a unix socket may have (108 bytes with the terminating NUL).
MAX_SOCKET_PATH = 107


def skopeo_pull(
    ref: str, dest_dir: str | os.PathLike, *, creds: str | None = None
) -> list[str]:
    """Copy ``ref`` (``host:port/name:tag``) from its registry into ``dest_dir``.

    Returns the layer digests, each checked against the sha256 of the file written.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    argv = ["skopeo", "--insecure-policy", "copy", "--quiet"]
    argv += ["--src-tls-verify=false"]
    argv += ["--src-creds", creds] if creds else ["--src-no-creds"]
    argv += [f"docker://{ref}", f"dir:{dest}"]
    run(argv, env=offline_env(hostname(ref)))
    manifest = json.loads((dest / "manifest.json").read_bytes())
    digests = [layer["digest"] for layer in manifest["layers"]]
    for digest in digests:
        algorithm, _, expected = digest.partition(":")
        actual = _sha256_file(dest / expected)
        if algorithm != "sha256" or actual != expected:
            raise LabError(f"skopeo wrote {dest / expected} with sha256 {actual}")
    return digests


def _sha256_file(path: Path) -> str:
    sha256 = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha256.update(chunk)
    return sha256.hexdigest()


def _toml(value) -> str:
    """A TOML string or list of strings (JSON spells them the same way)."""
    return json.dumps(value)


class Podman:
    """``podman`` with private storage (vfs), run root and configuration.

    ``mirrors`` maps a registry to a mirror host, for example
    ``{"docker.io": "127.0.0.1:5000"}``: pulls of ``docker.io/...`` then go to the
    mirror first, as a ``[[registry.mirror]]`` entry of registries.conf says.
    """

    def __init__(
        self, state_dir: str | os.PathLike, *, mirrors: dict[str, str] | None = None
    ):
        self.state_dir = Path(state_dir).absolute()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.mirrors = mirrors or {}
        self.root = self.state_dir / "root"
        self.runroot = self.state_dir / "run"
        self._write_config()

    def _write_config(self) -> None:
        state = self.state_dir
        (state / "tmp").mkdir(exist_ok=True)
        (state / "storage.conf").write_text(
            "[storage]\n"
            'driver = "vfs"\n'
            f"graphroot = {_toml(str(self.root))}\n"
            f"runroot = {_toml(str(self.runroot))}\n"
        )
        (state / "containers.conf").write_text(
            "[engine]\n"
            'events_logger = "file"\n'
            f"events_logfile_path = {_toml(str(state / 'events.log'))}\n"
            'cgroup_manager = "cgroupfs"\n'
            f"tmp_dir = {_toml(str(state / 'tmp'))}\n"
            f"image_copy_tmp_dir = {_toml(str(state / 'tmp'))}\n"
            f"static_dir = {_toml(str(self.root / 'libpod'))}\n"
            f"volume_path = {_toml(str(self.root / 'volumes'))}\n"
            "[network]\n"
            'network_backend = "netavark"\n'
            f"network_config_dir = {_toml(str(state / 'networks'))}\n"
        )
        registries = ["unqualified-search-registries = []"]
        for prefix, mirror in sorted(self.mirrors.items()):
            registries += [
                "[[registry]]",
                f"prefix = {_toml(prefix)}",
                f"location = {_toml(prefix)}",
                "[[registry.mirror]]",
                f"location = {_toml(mirror)}",
                "insecure = true",
            ]
        (state / "registries.conf").write_text("\n".join(registries) + "\n")

    def env(self, *hosts: str) -> dict[str, str]:
        """The environment podman runs in: only our configuration files."""
        env = offline_env(*hosts, *map(hostname, self.mirrors.values()))
        env["CONTAINERS_CONF"] = str(self.state_dir / "containers.conf")
        env["CONTAINERS_STORAGE_CONF"] = str(self.state_dir / "storage.conf")
        env["CONTAINERS_REGISTRIES_CONF"] = str(self.state_dir / "registries.conf")
        env["TMPDIR"] = str(self.state_dir / "tmp")
        return env

    def podman(self, *args: str, hosts: Iterable[str] = (), timeout=600) -> str:
        """Run a podman command against this private store; return its stdout."""
        argv = ["podman", "--root", self.root, "--runroot", self.runroot]
        argv += ["--storage-driver", "vfs", *args]
        return run(argv, env=self.env(*hosts), timeout=timeout)

    def pull(self, ref: str, *, creds: str | None = None) -> str:
        """Pull ``ref`` (TLS not verified); return the image id."""
        args = ["pull", "--quiet", "--tls-verify=false"]
        if creds:
            args += ["--creds", creds]
        return self.podman(*args, ref, hosts=[hostname(ref)]).strip()

    def inspect(self, ref: str) -> dict:
        """``podman image inspect`` of a pulled image."""
        return json.loads(self.podman("image", "inspect", ref))[0]

    def image_layers(self, ref: str) -> list[str]:
        """The image's uncompressed layer digests (diff_ids)."""
        return self.inspect(ref)["RootFS"]["Layers"]

    def remove(self, ref: str) -> None:
        """Delete a pulled image, so that the next pull fetches it again."""
        self.podman("rmi", "--force", ref)


class Containerd(Service):
    """``containerd`` with its root, state and sockets under ``state_dir``.

    The CRI plugin is off; images are unpacked with the ``native`` snapshotter.
    """

    name = "containerd"
    namespace = "eagle-lab"

    def __init__(self, state_dir: str | os.PathLike):
        super().__init__(state_dir)
        self.socket = _socket_path(self.state_dir / "containerd.sock")
        self.config_path = self.state_dir / "config.toml"
        self.hosts_dir = self.state_dir / "hosts"
        self.mirrors: dict[str, str] = {}

    def argv(self) -> list[str]:
        state = self.state_dir
        self.config_path.write_text(
            "version = 2\n"
            f"root = {_toml(str(state / 'root'))}\n"
            f"state = {_toml(str(state / 'state'))}\n"
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            "[grpc]\n"
            f"address = {_toml(str(self.socket))}\n"
            "[ttrpc]\n"
            f"address = {_toml(str(self.socket) + '.ttrpc')}\n"
            "[debug]\n"
            'address = ""\n'
            '[plugins."io.containerd.internal.v1.opt"]\n'
            f"path = {_toml(str(state / 'opt'))}\n"
        )
        return ["containerd", "--config", str(self.config_path)]

    def ready(self) -> bool:
        try:
            self.ctr("version", timeout=5)
        except LabError:
            return False
        return True

    def ctr(self, *args: str, hosts: Iterable[str] = (), timeout=600) -> str:
        """Run ``ctr`` against this containerd; return its stdout."""
        argv = ["ctr", "-a", self.socket, "-n", self.namespace, *args]
        return run(argv, env=offline_env(*hosts), timeout=timeout)

    def mirror(self, registry: str, url: str) -> None:
        """Make pulls from ``registry`` (say docker.io) try ``url`` first, with a
        ``hosts.toml`` in `hosts_dir`."""
        self.mirrors[registry] = url
        hosts = self.hosts_dir / registry
        hosts.mkdir(parents=True, exist_ok=True)
        (hosts / "hosts.toml").write_text(
            f"[host.{_toml(url)}]\ncapabilities = {_toml(['pull', 'resolve'])}\n"
        )

    def pull(self, ref: str, *, creds: str | None = None) -> str:
        """Pull and unpack ``ref`` (plain HTTP, mirrors from `mirror`); return the
        manifest digest."""
        args = ["images", "pull", "--snapshotter", "native", "--plain-http"]
        args += ["--hosts-dir", str(self.hosts_dir)]
        if creds:
            args += ["--user", creds]
        mirrors = map(hostname, self.mirrors.values())
        self.ctr(*args, ref, hosts=[hostname(ref), *mirrors])
        return self.manifest(ref)["digest"]

    def manifest(self, ref: str) -> dict:
        """The pulled image's manifest, with its own digest under "digest"."""
        out = self.ctr("images", "list", "--quiet")  # names only
        if ref not in out.split():
            raise LabError(f"{ref} is not in containerd")
        listing = self.ctr("images", "list")
        line = next(x for x in listing.splitlines() if x.split()[:1] == [ref])
        digest = next(word for word in line.split() if word.startswith("sha256:"))
        manifest = json.loads(self.ctr("content", "get", digest))
        if "manifests" in manifest:
            raise LabError(f"{ref} is an image index; only manifests are supported")
        return {**manifest, "digest": digest}

    def image_layers(self, ref: str) -> list[str]:
        """The layer blob digests of a pulled image."""
        return [layer["digest"] for layer in self.manifest(ref)["layers"]]

    def remove(self, ref: str) -> None:
        """Delete an image and (by garbage collection) its content."""
        self.ctr("images", "remove", "--sync", ref)

    def stop(self) -> None:
        super().stop()
        unmount_under(self.state_dir)


class Dockerd(Service):
    """``dockerd`` with data root, exec root, socket and its own containerd in
    ``state_dir``; no iptables, no bridge, vfs storage.

    ``mirrors`` are ``--registry-mirror`` URLs (Docker Hub pulls try them first);
    ``insecure`` are ``host:port`` names of plain-HTTP registries (127.0.0.0/8 is
    insecure anyway).
    """

    name = "dockerd"
    start_timeout = 60.0

    def __init__(
        self,
        state_dir: str | os.PathLike,
        *,
        mirrors: Iterable[str] = (),
        insecure: Iterable[str] = (),
    ):
        super().__init__(state_dir)
        self.mirrors = list(mirrors)
        self.insecure = list(insecure)
        self.socket = _socket_path(self.state_dir / "docker.sock")
        self.containerd = Containerd(self.state_dir / "containerd")

    @property
    def host(self) -> str:
        """The ``-H`` address of this daemon."""
        return f"unix://{self.socket}"

    def argv(self) -> list[str]:
        state = self.state_dir
        config = {"deprecated-key-path": str(state / "key.json")}  # not /etc/docker
        (state / "daemon.json").write_text(json.dumps(config))
        argv = ["dockerd", "--config-file", str(state / "daemon.json")]
        argv += ["--iptables=false", "--ip6tables=false", "--bridge=none"]
        argv += ["--storage-driver=vfs", "--containerd", str(self.containerd.socket)]
        argv += ["--data-root", str(state / "data"), "--exec-root", str(state / "exec")]
        argv += ["-H", self.host, "--pidfile", str(state / "docker.pid")]
        for mirror in self.mirrors:
            argv += ["--registry-mirror", mirror]
        for registry in self.insecure:
            argv += ["--insecure-registry", registry]
        return argv

    def env(self) -> dict[str, str]:
        return offline_env(*map(hostname, self.mirrors + self.insecure))

    def start(self) -> Dockerd:
        self.containerd.start()
        try:
            super().start()
        except BaseException:
            self.containerd.stop()
            raise
        return self

    def ready(self) -> bool:
        try:
            self.docker("info", "--format", "{{.ID}}", timeout=10)
        except LabError:
            return False
        return True

    def docker(self, *args: str, timeout=600) -> str:
        """Run the docker client against this daemon; return its stdout."""
        env = offline_env()
        env["DOCKER_CONFIG"] = str(self.state_dir / "client")  # no ~/.docker
        env.pop("DOCKER_HOST", None)
        return run([_docker_client(), "-H", self.host, *args], env=env, timeout=timeout)

    def pull(self, ref: str) -> str:
        """``docker pull ref``; return the image id."""
        self.docker("pull", "--quiet", ref)
        return self.inspect(ref)["Id"]

    def inspect(self, ref: str) -> dict:
        """``docker image inspect`` of a pulled image."""
        return json.loads(self.docker("image", "inspect", ref))[0]

    def image_layers(self, ref: str) -> list[str]:
        """The image's uncompressed layer digests (diff_ids)."""
        return self.inspect(ref)["RootFS"]["Layers"]

    def remove(self, ref: str) -> None:
        """Delete a pulled image, so that the next pull fetches it again."""
        self.docker("image", "rm", "--force", ref)

    def stop(self) -> None:
        super().stop()
        self.containerd.stop()
        unmount_under(self.state_dir)


def _docker_client() -> str:
    """The docker client packaged with dockerd if there is one, else any."""
    packaged = Path("/usr/bin/docker")
    client = str(packaged) if packaged.exists() else shutil.which("docker")
    if not client:
        raise LabError("the docker client is not installed")
    return client


def _socket_path(path: Path) -> Path:
    """``path``, checked to be short enough for a unix socket."""
    if len(str(path)) > MAX_SOCKET_PATH:
        raise LabError(f"socket path too long for unix sockets: {path}")
    return path
