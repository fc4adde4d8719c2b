"""Real multi-layer container images built from real files, without ``docker build``.

A tree of files (a Debian root file system, installed Python packages, or a few MB
of /usr/share) is split into N layers of about equal size, each a deterministic
gzip'd tar (sorted entries, mtime 0, owner root), and written as an OCI image
layout that ``skopeo`` pushes to a registry. The same tree gives the same digests.

Layers are gzip'd (level 6, as ``docker build`` does) because that is what engines
meet in practice, so blob sizes and the engines' work (decompress, verify diff_ids)
are realistic. ``compress=False`` gives plain tars, whose digest is their diff_id.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import platform
import re
import shutil
import stat
import sysconfig
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eagle.lab import (
    LabError,
    hostname,
    offline_env,
    run,
    unavailable,
    unmount_under,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
EPOCH = "1970-01-01T00:00:00Z"
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


def default_cache() -> Path:
    """Where built root file systems and layouts are kept between runs."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "eagle"


@dataclass(frozen=True)
class Layer:
    """One layer blob: its digest and size as stored, and its uncompressed digest."""

    digest: str
    size: int
    diff_id: str


@dataclass(frozen=True)
class Image:
    """An image in an OCI layout directory, found there under ``tag``."""

    layout: Path
    tag: str
    manifest: str
    config: str
    layers: tuple[Layer, ...]

    @property
    def size(self) -> int:
        """Total size of the layer blobs."""
        return sum(layer.size for layer in self.layers)

    def blob(self, digest: str) -> Path:
        """The file holding a blob of this layout."""
        algorithm, _, hexdigest = digest.partition(":")
        return self.layout / "blobs" / algorithm / hexdigest

    @classmethod
    def load(cls, layout: str | os.PathLike, tag: str | None = None) -> Image:
        """Read the image tagged ``tag`` (or the first) from an OCI layout."""
        layout = Path(layout)
        entries = json.loads((layout / "index.json").read_text())["manifests"]
        for entry in entries:
            name = entry.get("annotations", {}).get(REF_NAME)
            if tag is None or name == tag:
                break
        else:
            raise LabError(f"no image tagged {tag!r} in {layout}")
        manifest_digest = entry["digest"]
        path = layout / "blobs" / manifest_digest.replace(":", "/")
        manifest = json.loads(path.read_bytes())
        path = layout / "blobs" / manifest["config"]["digest"].replace(":", "/")
        diff_ids = json.loads(path.read_bytes())["rootfs"]["diff_ids"]
        layers = tuple(
            Layer(layer["digest"], layer["size"], diff_id)
            for layer, diff_id in zip(manifest["layers"], diff_ids, strict=True)
        )
        return cls(layout, name, manifest_digest, manifest["config"]["digest"], layers)


# -- trees of real files ---------------------------------------------------------


def debian_mirror(
    suite: str = "bookworm", apt_dir: str | os.PathLike = "/etc/apt"
) -> str:
    """The Debian mirror URL that apt on this machine uses for ``suite``."""
    apt = Path(apt_dir)
    sources = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*"))]
    for path in sources:
        if path.suffix == ".sources":
            entries = _deb822_entries(path.read_text())
        elif path.suffix == ".list" or path.name == "sources.list":
            entries = _one_line_entries(path.read_text()) if path.exists() else []
        else:
            continue
        for types, uris, suites in entries:
            if "deb" in types and suite in suites:
                for uri in uris:
                    if uri.startswith(("http://", "https://")):
                        return uri
    raise LabError(f"no Debian mirror for {suite} in {apt}/sources.list(.d)")


def _one_line_entries(text: str):
    """(types, uris, suites) from one-line ``deb [opts] URI SUITE COMP..`` sources."""
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
        if len(words) >= 3:
            yield [words[0]], [words[1]], [words[2]]


def _deb822_entries(text: str):
    """(types, uris, suites) from deb822 ``.sources`` stanzas."""
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.split()
        if fields.get("enabled", ["yes"])[0].lower() == "no":
            continue
        yield fields.get("types", []), fields.get("uris", []), fields.get("suites", [])


def rootfs(
    cache_dir: str | os.PathLike | None = None,
    *,
    suite: str = "bookworm",
    mirror: str | None = None,
) -> Path:
    """A ``debootstrap --variant=minbase`` root file system, built once and cached.

    Takes about a minute and 235 MB the first time; needs root and debootstrap.
    """
    cache = Path(cache_dir or default_cache())
    target = cache / f"rootfs-{suite}"
    if target.is_dir():
        return target
    reason = unavailable("debootstrap", root=True)
    if reason:
        raise LabError(f"cannot build a {suite} root file system: {reason}")
    mirror = mirror or debian_mirror(suite)

    def debootstrap(tmp: Path) -> None:
        argv = ["debootstrap", "--variant=minbase", suite, tmp, mirror]
        try:
            run(argv, timeout=1800)
        finally:
            unmount_under(tmp)  # debootstrap mounts /proc and /sys inside

    _build_atomically(target, debootstrap)
    return target


def python_packages() -> Path:
    """The running interpreter's site-packages: real files that need no root."""
    return Path(sysconfig.get_paths()["purelib"])


# -- images ------------------------------------------------------------------------


def debian_image(
    cache_dir: str | os.PathLike | None = None, *, layers: int = 4
) -> Image:
    """The bookworm root file system as an image of N layers, cached."""
    cache = Path(cache_dir or default_cache())
    tree = rootfs(cache)
    return _cached_layout(cache / f"oci-bookworm-{layers}", tree, layers)


def python_image(out_dir: str | os.PathLike, *, layers: int = 4) -> Image:
    """An image of this interpreter's installed Python packages, for hosts without
    root or debootstrap (about 150 MB in a virtualenv)."""
    prefix = "usr/lib/python3/site-packages"
    return build_oci_layout(python_packages(), out_dir, layers=layers, prefix=prefix)


def real_image(cache_dir: str | os.PathLike | None = None, *, layers: int = 4) -> Image:
    """The Debian image when it can be built (or is cached), else the Python one."""
    cache = Path(cache_dir or default_cache())
    can_debootstrap = not unavailable("debootstrap", root=True)
    if can_debootstrap or (cache / "rootfs-bookworm").is_dir():
        return debian_image(cache, layers=layers)
    return python_image(cache / f"oci-python-{layers}", layers=layers)


def small_image(
    out_dir: str | os.PathLike,
    *,
    layers: int = 3,
    size: int = 6 << 20,
    source: str | os.PathLike = "/usr/share",
    tag: str = "latest",
) -> Image:
    """A quick image of about ``size`` bytes of the first files found in ``source``."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        tree = Path(tmp)
        _copy_first_files(Path(source), tree / Path(source).relative_to("/"), size)
        return build_oci_layout(tree, out_dir, layers=layers, tag=tag)


def _copy_first_files(source: Path, dest: Path, budget: int) -> None:
    """Copy regular files (and symlinks) from ``source`` in sorted order until
    ``budget`` bytes are copied."""
    copied = 0
    for top, dirs, files in os.walk(source):
        dirs.sort()
        for name in sorted(files):
            path = Path(top, name)
            target = dest / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink():
                target.symlink_to(os.readlink(path))
            elif path.is_file() and os.access(path, os.R_OK):
                shutil.copyfile(path, target)
                copied += target.stat().st_size
            if copied >= budget:
                return


def build_oci_layout(
    tree: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    layers: int = 4,
    tag: str = "latest",
    prefix: str = "",
    compress: bool = True,
) -> Image:
    """Write ``tree`` as an OCI image layout of ``layers`` layers in ``out_dir``.

    The tree is cut into subtrees (whole top-level directories, big ones cut
    further) dealt out to layers by size, so the layers weigh about the same. Each
    layer also holds the parent directories of its subtrees. Paths in the image are
    ``prefix``/path-in-tree. An existing ``out_dir`` is replaced.
    """
    tree = Path(tree)
    parts = _split(tree, layers)

    def write(layout: Path) -> None:
        blobs = layout / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        written = [_write_layer(tree, part, blobs, prefix, compress) for part in parts]
        config = _config([layer.diff_id for layer in written])
        config_digest, config_size = _write_blob(blobs, config)
        media = OCI_LAYER_GZIP if compress else OCI_LAYER
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(OCI_CONFIG, config_digest, config_size),
            "layers": [_descriptor(media, x.digest, x.size) for x in written],
        }
        digest, size = _write_blob(blobs, manifest)
        entry = _descriptor(OCI_MANIFEST, digest, size)
        entry["annotations"] = {REF_NAME: tag}
        index = {"schemaVersion": 2, "manifests": [entry]}
        (layout / "index.json").write_bytes(_canonical(index))
        (layout / "oci-layout").write_bytes(_canonical({"imageLayoutVersion": "1.0.0"}))

    _build_atomically(Path(out_dir), write, replace=True)
    return Image.load(out_dir, tag)


def push(
    layout: str | os.PathLike | Image,
    registry_url: str,
    name: str,
    tag: str = "latest",
    *,
    creds: str | None = None,
) -> Image:
    """Push a layout's image to ``registry_url`` as ``name:tag`` with skopeo.

    Digests are kept as they are (``--preserve-digests``), so the returned image
    describes the pushed manifest and layers too.
    """
    image = layout if isinstance(layout, Image) else Image.load(layout)
    host = registry_url.split("://", 1)[-1].rstrip("/")
    digest_file = image.layout.parent / f".{image.layout.name}.pushed-digest"
    argv = ["skopeo", "--insecure-policy", "copy", "--quiet", "--preserve-digests"]
    argv += ["--dest-tls-verify=false", "--digestfile", digest_file]
    if creds:
        argv += ["--dest-creds", creds]
    argv += [f"oci:{image.layout}:{image.tag}", f"docker://{host}/{name}:{tag}"]
    run(argv, env=offline_env(hostname(host)))
    pushed = digest_file.read_text().strip()
    digest_file.unlink()
    if pushed != image.manifest:
        raise LabError(f"skopeo pushed {pushed}, the layout has {image.manifest}")
    return image


def push_as(
    layout: str | os.PathLike,
    tag: str,
    registry_url: str,
    name: str,
    ref_tag: str = "latest",
    *,
    format: str | None = None,
    all_images: bool = False,
) -> str:
    """Push ``tag`` of an OCI layout as ``name:ref_tag``, converted by skopeo to
    ``format`` (``v2s2``: Docker schema 2, manifest lists for indexes), every
    image of an index with ``all_images``; return the pushed manifest's digest.

    Unlike `push`, digests may change: a converted manifest is a new document.
    """
    host = registry_url.split("://", 1)[-1].rstrip("/")
    layout = Path(layout)
    digest_file = layout.parent / f".{layout.name}.{ref_tag}.pushed-digest"
    argv = ["skopeo", "--insecure-policy", "copy", "--quiet"]
    argv += ["--dest-tls-verify=false", "--digestfile", digest_file]
    if format:
        argv += ["--format", format]
    if all_images:
        argv += ["--all"]
    argv += [f"oci:{layout}:{tag}", f"docker://{host}/{name}:{ref_tag}"]
    run(argv, env=offline_env(hostname(host)))
    pushed = digest_file.read_text().strip()
    digest_file.unlink()
    return pushed


@dataclass(frozen=True)
class PlatformIndex:
    """An OCI image index in a layout, tagged ``tag``: one image per architecture."""

    layout: Path
    tag: str
    digest: str  # the index's own
    images: dict[str, str]  # architecture: manifest digest
    layers: tuple[Layer, ...]


def add_platforms(image: Image, architectures: tuple[str, ...]) -> PlatformIndex:
    """Tag, in ``image``'s layout, an index of one image per architecture.

    The images share ``image``'s layers and differ in their config's
    architecture: to a registry or a mirror that is all a multi-platform image is.
    """
    blobs = image.layout / "blobs" / "sha256"
    config = json.loads(image.blob(image.config).read_bytes())
    manifest = json.loads(image.blob(image.manifest).read_bytes())
    entries, images = [], {}
    for arch in architectures:
        digest, size = _write_blob(blobs, {**config, "architecture": arch})
        child = {**manifest, "config": _descriptor(OCI_CONFIG, digest, size)}
        digest, size = _write_blob(blobs, child)
        entry = _descriptor(OCI_MANIFEST, digest, size)
        entry["platform"] = {"architecture": arch, "os": "linux"}
        entries.append(entry)
        images[arch] = digest
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    digest, size = _write_blob(blobs, index)
    tag = f"{image.tag}-index"
    top = json.loads((image.layout / "index.json").read_bytes())
    entry = _descriptor(OCI_INDEX, digest, size)
    entry["annotations"] = {REF_NAME: tag}
    top["manifests"].append(entry)
    (image.layout / "index.json").write_bytes(_canonical(top))
    return PlatformIndex(image.layout, tag, digest, images, image.layers)


# -- layout internals -----------------------------------------------------------


def _cached_layout(out_dir: Path, tree: Path, layers: int) -> Image:
    """The layout in ``out_dir`` if it was built before, else build it."""
    if (out_dir / "index.json").exists():
        return Image.load(out_dir)
    return build_oci_layout(tree, out_dir, layers=layers)


def _split(tree: Path, layers: int) -> list[list[str]]:
    """Cut ``tree`` into ``layers`` lists of subtrees (paths relative to the tree)
    of about equal total size, largest subtrees dealt out first."""
    if layers < 1:
        raise ValueError("an image needs at least one layer")
    sizes = _subtree_sizes(tree)
    target = sizes["."] / layers

    def cut(rel: str) -> list[str]:
        units = []
        for entry in sorted(os.scandir(tree / rel), key=lambda e: e.name):
            path = os.path.normpath(os.path.join(rel, entry.name))
            if entry.is_dir(follow_symlinks=False) and sizes[path] > target:
                units += cut(path)
            else:
                units.append(path)
        return units

    units = sorted(cut("."), key=lambda p: (-sizes.get(p, 0), p))
    if len(units) < layers:
        raise LabError(f"{tree} has too few files for {layers} layers")
    parts: list[list[str]] = [[] for _ in range(layers)]
    weights = [0] * layers
    for unit in units:
        lightest = min(range(layers), key=lambda i: (weights[i], i))
        parts[lightest].append(unit)
        weights[lightest] += sizes.get(unit, 0)
    return [sorted(part) for part in parts]


def _subtree_sizes(tree: Path) -> dict[str, int]:
    """Bytes of regular files in and under each entry of ``tree``, by relative
    path ("." for the whole tree)."""
    sizes: dict[str, int] = {}
    for top, dirs, files in os.walk(tree, topdown=False):
        rel = os.path.relpath(top, tree)
        total = 0
        for name in files:
            path = os.path.normpath(os.path.join(rel, name))
            st = os.lstat(os.path.join(top, name))
            sizes[path] = st.st_size if stat.S_ISREG(st.st_mode) else 0
            total += sizes[path]
        for name in dirs:
            total += sizes.get(os.path.normpath(os.path.join(rel, name)), 0)
        sizes[rel] = total
    return sizes


def _layer_paths(tree: Path, part: list[str]) -> list[str]:
    """Every path a layer holds: its subtrees, their contents and their parents."""
    paths = set()
    for unit in part:
        parent = os.path.dirname(unit)
        while parent:
            paths.add(parent)
            parent = os.path.dirname(parent)
        paths.add(unit)
        if os.path.isdir(tree / unit) and not os.path.islink(tree / unit):
            for top, dirs, files in os.walk(tree / unit):
                rel = os.path.relpath(top, tree)
                paths.update(os.path.join(rel, name) for name in dirs + files)
    return sorted(paths)


class _Hashing:
    """A write-only file that passes bytes on and hashes them on the way."""

    def __init__(self, out):
        self.out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha256.hexdigest()


def _write_layer(
    tree: Path, part: list[str], blobs: Path, prefix: str, compress: bool
) -> Layer:
    """Write one layer's tar (gzip'd if ``compress``) into ``blobs``."""
    with tempfile.NamedTemporaryFile(dir=blobs, delete=False) as out:
        stored = _Hashing(out)
        zipped = None
        if compress:
            zipped = gzip.GzipFile(
                filename="", mode="wb", fileobj=stored, compresslevel=6, mtime=0
            )
        content = _Hashing(zipped or stored)
        with tarfile.open(fileobj=content, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for rel in _layer_paths(tree, part):
                _add(tar, tree / rel, os.path.join(prefix, rel))
        if zipped:
            zipped.close()  # writes the gzip trailer
    os.chmod(out.name, 0o644)
    os.replace(out.name, blobs / stored.digest.split(":")[1])
    return Layer(stored.digest, stored.size, content.digest)


def _add(tar: tarfile.TarFile, path: Path, name: str) -> None:
    """Add a file, directory or symlink with fixed owner and time; skip devices,
    sockets and pipes. Hard links are stored as separate files, since a link's
    target may sit in another layer."""
    st = os.lstat(path)
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = 0
    if stat.S_ISREG(st.st_mode):
        info.size = st.st_size
        with open(path, "rb") as f:
            tar.addfile(info, f)
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
        tar.addfile(info)


def _config(diff_ids: list[str]) -> dict:
    """An OCI image config for this machine's platform."""
    machine = platform.machine()
    return {
        "architecture": ARCHITECTURES.get(machine, machine),
        "os": "linux",
        "created": EPOCH,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": EPOCH, "created_by": f"eagle lab: layer {i + 1}"}
            for i in range(len(diff_ids))
        ],
    }


def _canonical(document: dict) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _write_blob(blobs: Path, document: dict) -> tuple[str, int]:
    """Store a JSON document as a blob; return its digest and size."""
    data = _canonical(document)
    hexdigest = hashlib.sha256(data).hexdigest()
    (blobs / hexdigest).write_bytes(data)
    return f"sha256:{hexdigest}", len(data)


def _descriptor(media_type: str, digest: str, size: int) -> dict:
    return {"mediaType": media_type, "digest": digest, "size": size}


def _build_atomically(
    target: Path, build: Callable[[Path], None], *, replace: bool = False
) -> None:
    """Build into a temporary sibling of ``target`` and rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        tmp.chmod(0o755)
        if replace and target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
