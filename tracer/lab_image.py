"""The lab's image, ``tracer-lab:latest``, made without a registry: a rootfs
tar of host binaries (static busybox and its applets, iperf3 with the
libraries ``ldd`` lists) fed to ``docker import``, rebuilt only when the
recipe's hash (an image label) changes."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from typing import Any

from tracer.lab_base import (CONTAINER_CMD, CONTAINER_PORT, IMAGE, IMAGE_REPO, INDEX_HTML, LABEL, LabError,
                             RECIPE_LABEL, RECIPE_VERSION, _log, busybox)

# --------------------------------------------------------------------------- image


@dataclass(frozen=True)
class _Recipe:
    files: tuple[tuple[str, str], ...]  # (path in image, path on host)
    applets: tuple[str, ...]
    digest: str


def _elf_deps(binary: str) -> list[str]:
    """Absolute paths of the shared libraries (and loader) a host binary needs."""
    cp = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if cp.returncode != 0:  # static ("not a dynamic executable")
        return []
    deps = []
    for line in cp.stdout.splitlines():
        m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)", line)
        if m:
            deps.append(m.group(1))
    return deps


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _recipe() -> _Recipe:
    host_busybox = busybox()
    files: list[tuple[str, str]] = [("/bin/busybox", host_busybox)]
    files += [(d, d) for d in _elf_deps(host_busybox)]
    iperf3 = shutil.which("iperf3", path="/usr/bin:/usr/local/bin:/bin")
    if iperf3:
        files.append(("/usr/bin/iperf3", iperf3))
        files += [(d, d) for d in _elf_deps(iperf3)]
    files = sorted(dict(files).items())
    out = subprocess.run([host_busybox, "--list"], capture_output=True, text=True, check=True).stdout
    applets = tuple(sorted(a for a in out.split() if a and "/" not in a and a != "busybox"))
    h = hashlib.sha256()
    h.update(f"recipe {RECIPE_VERSION}\n".encode())
    h.update(INDEX_HTML.encode())
    h.update(json.dumps(_image_changes()).encode())
    h.update(" ".join(applets).encode())
    for dest, src in files:
        h.update(f"\n{dest} {_sha256_file(src)}".encode())
    return _Recipe(tuple(files), applets, h.hexdigest()[:16])


def _image_changes(digest: str = "") -> list[str]:
    changes = [
        "ENV PATH=/bin:/usr/bin:/sbin:/usr/sbin",
        f"EXPOSE {CONTAINER_PORT}/tcp",
        f'CMD {json.dumps(CONTAINER_CMD)}',
        f"LABEL {LABEL}=1",
    ]
    if digest:
        changes.append(f"LABEL {RECIPE_LABEL}={digest}")
    return changes


def _rootfs_tar(recipe: _Recipe) -> bytes:
    buf = io.BytesIO()
    now = int(time.time())

    def add_dir(tf: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
        ti = tarfile.TarInfo(name.lstrip("/"))
        ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, mode, now
        tf.addfile(ti)

    def add_bytes(tf: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
        ti = tarfile.TarInfo(name.lstrip("/"))
        ti.size, ti.mode, ti.mtime = len(data), mode, now
        tf.addfile(ti, io.BytesIO(data))

    dirs = {"/bin", "/sbin", "/usr", "/usr/bin", "/usr/sbin", "/etc", "/www", "/root",
            "/proc", "/sys", "/dev", "/var", "/var/run", "/run"}
    for dest, _ in recipe.files:
        parent = os.path.dirname(dest)
        while parent not in ("/", ""):
            dirs.add(parent)
            parent = os.path.dirname(parent)
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for d in sorted(dirs):
            add_dir(tf, d)
        add_dir(tf, "/tmp", 0o1777)
        for dest, src in recipe.files:
            with open(src, "rb") as f:  # dereferences symlinks: the image gets real files
                add_bytes(tf, dest, f.read(), 0o755)
        for applet in recipe.applets:
            ti = tarfile.TarInfo(f"bin/{applet}")
            ti.type, ti.linkname, ti.mode, ti.mtime = tarfile.SYMTYPE, "busybox", 0o777, now
            tf.addfile(ti)
        add_bytes(tf, "/www/index.html", INDEX_HTML.encode())
        add_bytes(tf, "/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        add_bytes(tf, "/etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        add_bytes(tf, "/etc/os-release", f'NAME="tracer lab"\nID=tracer-lab\nVERSION_ID="{RECIPE_VERSION}"\n'.encode())
    return buf.getvalue()


def ensure_image(dc: Any = None) -> str:
    """Build ``tracer-lab:latest`` offline unless an image of the same recipe exists.
    Returns the image id."""
    from docker.errors import ImageNotFound

    from tracer import dockerd

    dc = dc or dockerd.client()
    recipe = _recipe()
    old_id = None
    try:
        img = dc.images.get(IMAGE)
        old_id = img.id
        if (img.labels or {}).get(RECIPE_LABEL) == recipe.digest:
            return img.id
    except ImageNotFound:
        pass
    _log(f"building image {IMAGE} (recipe {recipe.digest}) from host binaries, offline")
    data = _rootfs_tar(recipe)
    dc.api.import_image_from_data(data, repository=IMAGE_REPO, tag="latest", changes=_image_changes(recipe.digest))
    img = dc.images.get(IMAGE)
    if (img.labels or {}).get(RECIPE_LABEL) != recipe.digest:
        raise LabError(f"docker import of {IMAGE} did not produce the expected image")
    if old_id and old_id != img.id:
        with contextlib.suppress(Exception):
            dc.images.remove(old_id)  # fails harmlessly while a container still uses it
    return img.id
