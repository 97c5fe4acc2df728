"""Kernel headers for BCC.

BCC will not compile without a kernel header tree, but nothing in our BPF code
takes a struct layout from those headers (offsets come from BTF, see btf.py):
the headers only provide types such as ``__u32`` and uapi constants. So when
the running kernel has no ``/lib/modules/$(uname -r)/build``, we assemble a tree
BCC accepts from the nearest installed distro headers under a cache directory
and point ``BCC_KERNEL_SOURCE`` at it. We never write into ``/lib/modules``.

Debian splits a header package in two: ``linux-headers-X-amd64`` (generated
files, config) and ``linux-headers-X-common`` (the sources). BCC wants one
directory holding ``include/linux/kconfig.h`` and the generated headers, so the
cache tree is a symlink farm of ``-common`` overlaid with the arch directory.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tracer import own_env
from tracer.errors import MissingCapability

BCC_KERNEL_SOURCE = "BCC_KERNEL_SOURCE"  # where BCC looks for the header tree
SRC_ROOT = Path("/usr/src")
CACHE_ROOT = Path(os.environ.get("TRACER_CACHE", "/var/cache/tracer"))


@dataclass(frozen=True)
class HeaderSource:
    path: Path
    origin: str  # "env", "running-kernel", "distro:<name>", "kheaders"

    def describe(self) -> str:
        return f"{self.origin} ({self.path})"


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", name))


def _release_distance(candidate: str, release: str) -> tuple:
    """Order header trees by closeness to the running release (newest first)."""
    want = _version_key(release)[:2]
    have = _version_key(candidate)[:2]
    return (abs((want[0] - have[0]) * 1000 + (want[1] - have[1]) if have and want else 10**6), [-n for n in _version_key(candidate)])


def find_arch_trees(src_root: Path = SRC_ROOT) -> list[Path]:
    """Installed distro header trees that carry generated headers (arch part)."""
    trees = []
    if not src_root.is_dir():
        return trees
    for entry in src_root.iterdir():
        if entry.name.startswith("linux-headers-") and (entry / "include" / "generated").is_dir():
            if not entry.name.endswith("-common") and "-rt-" not in entry.name:
                trees.append(entry)
    return trees


def _common_for(arch_tree: Path) -> Path | None:
    """Debian: linux-headers-6.1.0-56-amd64 pairs with linux-headers-6.1.0-56-common."""
    if (arch_tree / "include" / "linux" / "kconfig.h").exists():
        return arch_tree  # already a full tree (Ubuntu's -generic is)
    base = re.sub(r"-(amd64|arm64|cloud-amd64|cloud-arm64|generic)$", "", arch_tree.name)
    common = arch_tree.parent / f"{base}-common"
    return common if common.is_dir() else None


def _assemble(arch_tree: Path, common: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["cp", "-rs", str(common), str(tmp)], check=True)
    subprocess.run(["cp", "-rsf", "--remove-destination", f"{arch_tree}/.", f"{tmp}/"], check=True)
    tmp.rename(dest)


def header_source(release: str | None = None, src_root: Path = SRC_ROOT, cache_root: Path = CACHE_ROOT) -> HeaderSource:
    """Find (and if needed assemble) a header tree for BCC."""
    env = os.environ.get(BCC_KERNEL_SOURCE)
    if env:
        return HeaderSource(Path(env), "env")
    release = release or platform.release()
    build = Path("/lib/modules") / release / "build"
    if (build / "include" / "linux" / "kconfig.h").exists():
        return HeaderSource(build, "running-kernel")
    candidates = [t for t in find_arch_trees(src_root) if _common_for(t)]
    if not candidates:
        raise MissingCapability(
            "no kernel headers found for BCC; run scripts/setup.sh (installs linux-headers for this distro)"
        )
    best = sorted(candidates, key=lambda t: _release_distance(t.name, release))[0]
    common = _common_for(best)
    if common == best:
        return HeaderSource(best, f"distro:{best.name}")
    dest = cache_root / "kheaders" / best.name
    if not (dest / "include" / "linux" / "kconfig.h").exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        _assemble(best, common, dest)
    return HeaderSource(dest, f"distro:{best.name}")


def ensure_bcc_headers(environ=os.environ, own: set[str] | None = None) -> HeaderSource:
    """Point BCC at a usable header tree; call before the first BPF() compile.
    Set as tracer's own variable (tracer/own_env.py): the processes tracer
    leaves running (the lab's dockerd and server) do not inherit it; a
    user's own setting is used and stays."""
    src = header_source()
    if not environ.get(BCC_KERNEL_SOURCE):  # set but empty: BCC would take it as no tree at all
        environ.pop(BCC_KERNEL_SOURCE, None)
    own_env.set_default(BCC_KERNEL_SOURCE, str(src.path), environ, own)
    return src
