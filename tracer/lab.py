"""The lab: a small, fully offline Docker setup whose packets tracer follows.

    client netns ``tracer-client``            host                      container ``tracer-lab-web``
    trc-client 198.18.0.2/30  <-- veth -->  trc-host 198.18.0.1/30
               fd00:198:18::2/64                 fd00:198:18::1/64 (docker-proxy listens on [::]:8000)
                                            :8000 --DNAT--> docker0 --> veth --> eth0 :8080 (busybox httpd)
    :9000 busybox httpd  <--MASQUERADE (src 198.18.0.1)-- docker0 <-- veth <-- eth0 (wget)

* The image ``tracer-lab:latest`` is made without a registry: a rootfs tar built
  from host binaries (static busybox and its applets, iperf3 with the shared
  libraries ``ldd`` lists) is fed to ``docker import``. A hash of the recipe is
  kept as an image label; the image is rebuilt only when that hash changes.
* The client netns' only non-connected route is its default via the host, so
  its connections to 198.18.0.1:8000 take PREROUTING DNAT -> FORWARD -> docker0,
  the path tracer exists to show (a connection from the host itself would go
  through OUTPUT or docker-proxy instead).
* The server in the client netns (port 9000) gives the container somewhere to
  connect to, so the MASQUERADE path has traffic too.

The lab adds no iptables rules of its own: Docker's port publishing and
MASQUERADE do all the NAT. ``up`` is idempotent and verifies reachability end
to end before it reports success; ``down`` removes everything it made (the
image stays as a cache).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tracer.errors import TracerError, one_line, require_root

# --- names and addresses (the lab contract; other code and tests rely on them)
NETNS = "tracer-client"
HOST_IFACE = "trc-host"
CLIENT_IFACE = "trc-client"
HOST_ADDRESS = "198.18.0.1"
CLIENT_ADDRESS = "198.18.0.2"
PREFIX_LEN = 30
# IPv6 on the same veth (unique local addresses): reaches the published port
# through docker-proxy, which listens on [::]:8000 (no IPv6 NAT in Docker's
# default configuration).
HOST_ADDRESS6 = "fd00:198:18::1"
CLIENT_ADDRESS6 = "fd00:198:18::2"
PREFIX_LEN6 = 64
PORT = 8000  # published on the host
CONTAINER = "tracer-lab-web"
CONTAINER_PORT = 8080
SERVER_PORT = 9000  # in the client netns, for the container's outbound path
IPERF_PORT = 5201
IMAGE_REPO = "tracer-lab"
IMAGE = f"{IMAGE_REPO}:latest"
BRIDGE = "docker0"

RUN_DIR = Path("/run/tracer")
STATE_FILE = RUN_DIR / "lab.json"
LOCK_FILE = RUN_DIR / "lab.lock"
LAB_DIR = RUN_DIR / "lab"
SERVER_ROOT = LAB_DIR / "www"

LABEL = "tracer.lab"
RECIPE_LABEL = "tracer.lab.recipe"
CONFIG_LABEL = "tracer.lab.config"
RECIPE_VERSION = "3"

INDEX_MARKER = "tracer lab web"
INDEX_HTML = (
    "<!doctype html>\n<html><head><title>tracer lab web</title></head>\n"
    f"<body><h1>{INDEX_MARKER}</h1><p>busybox httpd in {CONTAINER}, port {CONTAINER_PORT}</p></body></html>\n"
)
SERVER_MARKER = "tracer lab client server"
SERVER_INDEX = f"{SERVER_MARKER}: busybox httpd in netns {NETNS} on {CLIENT_ADDRESS}:{SERVER_PORT}\n"

# sh is PID 1 and exits on TERM, so `docker stop` is quick; httpd stays in the
# foreground of that sh so the container lives exactly as long as the server.
CONTAINER_CMD = [
    "/bin/sh",
    "-c",
    f"if command -v iperf3 >/dev/null; then iperf3 -s -D -p {IPERF_PORT} --logfile /tmp/iperf3.log; fi; "
    f"httpd -f -p {CONTAINER_PORT} -h /www & trap 'exit 0' TERM INT; wait",
]
CONTAINER_PORTS = {
    f"{CONTAINER_PORT}/tcp": PORT,
    f"{IPERF_PORT}/tcp": IPERF_PORT,
    f"{IPERF_PORT}/udp": IPERF_PORT,
}

VERIFY_TIMEOUT = 20.0


class LabError(TracerError):
    exit_code = 1


def _require_root(what: str) -> None:
    require_root(f"tracer lab {what}")


def _log(msg: str) -> None:
    # progress goes to stderr so `tracer lab up > lab.json` stays clean JSON
    print(f"lab: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- shell


def _run(cmd: list[str], *, check: bool = True, timeout: float = 30, input: str | None = None) -> subprocess.CompletedProcess:
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
    except FileNotFoundError as exc:
        raise LabError(f"{cmd[0]} is not installed; run `sudo scripts/setup.sh`") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`{' '.join(cmd)}` timed out after {timeout:.0f}s") from exc
    if check and cp.returncode != 0:
        err = one_line(cp.stderr or cp.stdout, 200)
        raise LabError(f"`{' '.join(cmd)}` failed: {err}")
    return cp


def _ip_json(*args: str, netns: str | None = None) -> list[dict]:
    cmd = ["ip", "-j"] + (["-n", netns] if netns else []) + list(args)
    cp = _run(cmd, check=False)
    if cp.returncode != 0 or not cp.stdout.strip():
        return []
    # strict=False: iproute2 writes an interface name's control characters
    # raw into its JSON strings (any user can name a link `a\x1b[7m`).
    return json.loads(cp.stdout, strict=False)


def busybox() -> str:
    """Path of the host's busybox (busybox-static), used by the lab and its traffic."""
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        if os.access(cand, os.X_OK):
            return cand
    found = shutil.which("busybox")
    if not found:
        raise LabError("busybox is not installed (apt-get install busybox-static); run `sudo scripts/setup.sh`")
    return found


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


# --------------------------------------------------------------------------- state


def _read_state() -> dict:
    try:
        return json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return {}


def _write_state(state: dict) -> None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(STATE_FILE)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Serialise up/down between processes (tests and engineers share the lab)."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- process identity


def _proc_start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a live, non-zombie process, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _netns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _server_alive(state: dict) -> bool:
    pid, start = state.get("server_pid"), state.get("server_start_time")
    if not pid or _proc_start_time(pid) != start:
        return False
    return _netns_inode(f"/proc/{pid}/ns/net") == _netns_inode(f"/run/netns/{NETNS}")


def _kill_server(state: dict) -> int | None:
    """Kill the recorded server, and only it: pid plus start time must match."""
    pid, start = state.get("server_pid"), state.get("server_start_time")
    if not pid or start is None or _proc_start_time(pid) != start:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # reaps it when it happens to be our child
        if _proc_start_time(pid) != start:
            return pid
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return pid


# --------------------------------------------------------------------------- netns + veth


def _netns_exists() -> bool:
    return os.path.exists(f"/run/netns/{NETNS}")


def _has_addr(links: list[dict], addr: str) -> bool:
    for link in links:
        for a in link.get("addr_info", []):
            if a.get("family") == "inet" and a.get("local") == addr and a.get("prefixlen") == PREFIX_LEN:
                return True
    return False


def _has_addr6(links: list[dict], addr: str) -> bool:
    return any(a.get("family") == "inet6" and a.get("local") == addr and a.get("prefixlen") == PREFIX_LEN6
               for link in links for a in link.get("addr_info", []))


def _ipv6_ready() -> bool:
    return (_netns_exists() and _has_addr6(_ip_json("addr", "show", "dev", HOST_IFACE), HOST_ADDRESS6)
            and _has_addr6(_ip_json("addr", "show", "dev", CLIENT_IFACE, netns=NETNS), CLIENT_ADDRESS6))


def _ensure_ipv6() -> None:
    """The IPv6 addresses on the lab veth, added in place (a running lab gets
    them without being rebuilt). Static, without DAD, no link-local address,
    no autoconfiguration: no router solicitations or DAD probes in traces."""
    for netns, iface, addr in ((None, HOST_IFACE, HOST_ADDRESS6), (NETNS, CLIENT_IFACE, CLIENT_ADDRESS6)):
        if _has_addr6(_ip_json("addr", "show", "dev", iface, netns=netns), addr):
            continue
        _log(f"adding {addr}/{PREFIX_LEN6} to {iface}" + (f" in {netns}" if netns else ""))
        for key, value in (("accept_ra", "0"), ("autoconf", "0"), ("addr_gen_mode", "1"), ("disable_ipv6", "0")):
            _sysctl_write(f"/proc/sys/net/ipv6/conf/{iface}/{key}", value, netns)
        _run((["ip", "-n", netns] if netns else ["ip"]) + ["addr", "add", f"{addr}/{PREFIX_LEN6}", "dev", iface, "nodad"])


def _netns_problems() -> list[str]:
    if not _netns_exists():
        return [f"netns {NETNS} missing"]
    problems = []
    host = _ip_json("addr", "show", "dev", HOST_IFACE)
    if not _has_addr(host, HOST_ADDRESS):
        problems.append(f"{HOST_IFACE} missing or without {HOST_ADDRESS}/{PREFIX_LEN}")
    elif "UP" not in host[0].get("flags", []):
        problems.append(f"{HOST_IFACE} is down")
    client = _ip_json("addr", "show", "dev", CLIENT_IFACE, netns=NETNS)
    if not _has_addr(client, CLIENT_ADDRESS):
        problems.append(f"{CLIENT_IFACE} in {NETNS} missing or without {CLIENT_ADDRESS}/{PREFIX_LEN}")
    elif "UP" not in client[0].get("flags", []):
        problems.append(f"{CLIENT_IFACE} is down")
    routes = _ip_json("-4", "route", "show", netns=NETNS)
    defaults = [r for r in routes if r.get("dst") == "default"]
    if len(defaults) != 1 or defaults[0].get("gateway") != HOST_ADDRESS:
        problems.append(f"{NETNS} has no default route via {HOST_ADDRESS}")
    return problems


def _sysctl_write(path: str, value: str, netns: str | None = None) -> None:
    if netns is None:
        with contextlib.suppress(OSError):
            Path(path).write_text(value + "\n")
        return
    # /proc/sys/net shows the netns of the process that opens it
    _run(["ip", "netns", "exec", netns, busybox(), "sh", "-c", f"echo '{value}' > {path}"], check=False)


def _create_netns() -> None:
    _run(["ip", "netns", "add", NETNS])
    _run(["ip", "link", "add", HOST_IFACE, "type", "veth", "peer", "name", CLIENT_IFACE, "netns", NETNS])
    # IPv6 off on the lab veth: no RS/DAD/MLD noise in traces
    _sysctl_write(f"/proc/sys/net/ipv6/conf/{HOST_IFACE}/disable_ipv6", "1")
    _run(["ip", "addr", "add", f"{HOST_ADDRESS}/{PREFIX_LEN}", "dev", HOST_IFACE])
    _run(["ip", "link", "set", HOST_IFACE, "up"])
    n = ["ip", "-n", NETNS]
    _sysctl_write(f"/proc/sys/net/ipv6/conf/{CLIENT_IFACE}/disable_ipv6", "1", NETNS)
    _run(n + ["link", "set", "lo", "up"])
    _run(n + ["addr", "add", f"{CLIENT_ADDRESS}/{PREFIX_LEN}", "dev", CLIENT_IFACE])
    _run(n + ["link", "set", CLIENT_IFACE, "up"])
    _run(n + ["route", "add", "default", "via", HOST_ADDRESS])


def _tune_client_netns() -> None:
    # busybox httpd closes after each request: load tests open a connection per
    # request, so reuse TIME_WAIT ports and widen the ephemeral range
    _sysctl_write("/proc/sys/net/ipv4/tcp_tw_reuse", "1", NETNS)
    _sysctl_write("/proc/sys/net/ipv4/ip_local_port_range", "1024 65000", NETNS)


def _delete_netns() -> list[str]:
    removed = []
    if _netns_exists():
        _run(["ip", "netns", "del", NETNS], check=False)
        removed.append(f"netns {NETNS}")
    # a process still inside the netns keeps it (and the veth) alive: drop the veth explicitly
    if _ip_json("link", "show", "dev", HOST_IFACE):
        _run(["ip", "link", "del", HOST_IFACE], check=False)
        removed.append(f"link {HOST_IFACE}")
    return removed


def _start_server() -> dict:
    SERVER_ROOT.mkdir(parents=True, exist_ok=True)
    (SERVER_ROOT / "index.html").write_text(SERVER_INDEX)
    bb = busybox()
    # the sh exits at once, so the server is never our child (no zombie, no wait)
    cp = _run([
        "sh", "-c",
        f"setsid ip netns exec {NETNS} {bb} httpd -f -p {CLIENT_ADDRESS}:{SERVER_PORT} -h {SERVER_ROOT} "
        "</dev/null >/dev/null 2>&1 & echo $!",
    ])
    pid = int(cp.stdout.strip())
    start = _proc_start_time(pid)
    if start is None:
        raise LabError(f"the client-netns server (pid {pid}) exited at once")
    return {"server_pid": pid, "server_start_time": start}


# --------------------------------------------------------------------------- container


def _container_config_digest(image_id: str) -> str:
    blob = json.dumps({"image": image_id, "cmd": CONTAINER_CMD, "ports": CONTAINER_PORTS, "v": RECIPE_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _get_container(dc: Any, name: str = CONTAINER) -> Any:
    from docker.errors import NotFound

    try:
        return dc.containers.get(name)
    except NotFound:
        return None


def _container_ip(c: Any) -> str | None:
    nets = (c.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    ip = (nets.get("bridge") or {}).get("IPAddress")
    return ip or None


def _ensure_container(dc: Any, image_id: str) -> Any:
    from docker.errors import APIError

    want = _container_config_digest(image_id)
    c = _get_container(dc)
    if c is not None and ((c.labels or {}).get(CONFIG_LABEL) != want or c.attrs.get("Image") != image_id):
        _log(f"container {CONTAINER} is from another recipe: recreating it")
        c.remove(force=True)
        c = None
    try:
        if c is None:
            _log(f"starting container {CONTAINER} (host :{PORT} -> :{CONTAINER_PORT})")
            c = dc.containers.run(
                image_id,
                command=CONTAINER_CMD,
                name=CONTAINER,
                hostname=CONTAINER,
                detach=True,
                ports=CONTAINER_PORTS,
                labels={LABEL: "1", CONFIG_LABEL: want},
                restart_policy={"Name": "unless-stopped"},
            )
        elif c.status == "paused":
            _log(f"unpausing container {CONTAINER}")
            c.unpause()
        elif c.status != "running":
            _log(f"container {CONTAINER} was {c.status}: starting it")
            c.start()
    except APIError as exc:
        raise LabError(f"docker could not run {CONTAINER}: {one_line(exc.explanation or exc, 200)}") from exc
    deadline = time.monotonic() + 15
    while True:
        c.reload()
        if c.status == "running" and _container_ip(c):
            return c
        if time.monotonic() > deadline:
            raise LabError(f"container {CONTAINER} is {c.status} after start; see `docker logs {CONTAINER}`")
        time.sleep(0.1)


def _container_veth(c: Any) -> str | None:
    """Host-side veth of the container's eth0 (its peer ifindex is eth0's iflink)."""
    pid = (c.attrs.get("State") or {}).get("Pid")
    if not pid:
        return None
    # (not /sys/class/net/eth0/iflink: under nsenter -n, /sys is still the host's)
    out = _run(["nsenter", "-t", str(pid), "-n", "ip", "-j", "link", "show", "eth0"], check=False).stdout
    iflink = 0
    with contextlib.suppress(ValueError, IndexError, KeyError, TypeError):
        iflink = int(json.loads(out, strict=False)[0]["link_index"])
    if not iflink:
        return None
    for link in _ip_json("link", "show"):
        if link.get("ifindex") == iflink:
            return link.get("ifname")
    return None


# --------------------------------------------------------------------------- verification


# NB: busybox 1.35 (Debian 12 busybox-static) wget segfaults with -T; bound it with timeout(1)
def _client_get(url: str, timeout: int = 2) -> subprocess.CompletedProcess:
    return _run(["ip", "netns", "exec", NETNS, "timeout", str(timeout), busybox(), "wget", "-q", "-O-", url],
                check=False, timeout=timeout + 5)


def _container_get(c: Any, url: str, timeout: int = 2) -> tuple[int, str]:
    res = c.exec_run(["timeout", str(timeout), "wget", "-q", "-O-", url])
    return res.exit_code, (res.output or b"").decode(errors="replace")


def _verify(c: Any, timeout: float = VERIFY_TIMEOUT) -> None:
    url = f"http://{HOST_ADDRESS}:{PORT}/"
    deadline = time.monotonic() + timeout
    while True:
        cp = _client_get(url)
        if cp.returncode == 0 and INDEX_MARKER in cp.stdout:
            break
        if time.monotonic() > deadline:
            raise LabError(f"from netns {NETNS}, GET {url} did not return the lab page "
                           f"({one_line(cp.stderr, 120) or 'no answer'}); check DNAT/FORWARD rules (iptables -t nat -S DOCKER)")
        time.sleep(0.2)
    url = f"http://{CLIENT_ADDRESS}:{SERVER_PORT}/"
    while True:
        rc, out = _container_get(c, url)
        if rc == 0 and SERVER_MARKER in out:
            break
        if time.monotonic() > deadline:
            raise LabError(f"from {CONTAINER}, GET {url} failed ({one_line(out, 120) or rc}); "
                           "check ip_forward, FORWARD and MASQUERADE rules")
        time.sleep(0.2)


# --------------------------------------------------------------------------- public API


def up() -> dict:
    """Bring the lab up (idempotent), verify it end to end, return its status."""
    _require_root("up")
    from tracer import dockerd

    dc = dockerd.client()
    with _locked():
        image_id = ensure_image(dc)
        if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() != "1":
            _log("enabling net.ipv4.ip_forward")
            _sysctl_write("/proc/sys/net/ipv4/ip_forward", "1")
        c = _ensure_container(dc, image_id)

        state = _read_state()
        problems = _netns_problems()
        if problems:
            if _netns_exists() or _ip_json("link", "show", "dev", HOST_IFACE):
                _log(f"client netns needs rebuilding ({'; '.join(problems)})")
                _kill_server(state)
                _delete_netns()
            _log(f"creating netns {NETNS}: {CLIENT_IFACE} {CLIENT_ADDRESS}/{PREFIX_LEN} <-> {HOST_IFACE} {HOST_ADDRESS}/{PREFIX_LEN}")
            _create_netns()
        _tune_client_netns()
        _ensure_ipv6()
        if not _server_alive(state):
            _kill_server(state)
            _log(f"starting server {CLIENT_ADDRESS}:{SERVER_PORT} in netns {NETNS}")
            state.update(_start_server())
        state.update({"container_id": c.id, "image_id": image_id, "netns": NETNS})
        _write_state(state)
        _verify(c)
        state["verified_at"] = time.time()
        _write_state(state)
    return status(dc)


def status(dc: Any = None) -> dict:
    """Describe the lab (without changing it). ``up`` is True when every part is in place."""
    _require_root("status")
    from tracer import dockerd

    problems: list[str] = []
    state = _read_state()
    c = None
    try:
        dc = dc or dockerd.client(timeout=10)
        c = _get_container(dc)
    except TracerError as exc:
        problems.append(str(exc))
    if c is None and not problems:
        problems.append(f"container {CONTAINER} missing")
    elif c is not None and c.status != "running":
        problems.append(f"container {CONTAINER} is {c.status}")
    problems += _netns_problems()
    server_alive = _server_alive(state)
    if not server_alive:
        problems.append(f"server {CLIENT_ADDRESS}:{SERVER_PORT} in {NETNS} not running")
    running = c is not None and c.status == "running"
    host_link = _ip_json("link", "show", "dev", HOST_IFACE)
    bridge = _ip_json("link", "show", "dev", BRIDGE)
    ipv6 = _ipv6_ready()
    return {
        "up": not problems,
        "netns": NETNS,
        "host_address": HOST_ADDRESS,
        "client_address": CLIENT_ADDRESS,
        "prefix_len": PREFIX_LEN,
        # IPv6 is reported, not required: a lab brought up by an older version
        # has none until the next `lab up` adds it.
        "host_address6": HOST_ADDRESS6 if ipv6 else None,
        "client_address6": CLIENT_ADDRESS6 if ipv6 else None,
        "port": PORT,
        "url": f"http://{HOST_ADDRESS}:{PORT}/",
        "container": CONTAINER,
        "container_id": c.id if c is not None else None,
        "container_port": CONTAINER_PORT,
        "container_ip": _container_ip(c) if running else None,
        "container_pid": (c.attrs.get("State") or {}).get("Pid") or None if running else None,
        "container_veth": _container_veth(c) if running else None,
        "image": IMAGE,
        "bridge": BRIDGE,
        "bridge_ifindex": bridge[0]["ifindex"] if bridge else None,
        "server_address": CLIENT_ADDRESS,
        "server_port": SERVER_PORT,
        "server_pid": state.get("server_pid") if server_alive else None,
        "iperf_port": IPERF_PORT,
        "host_iface": HOST_IFACE,
        "host_ifindex": host_link[0]["ifindex"] if host_link else None,
        "client_iface": CLIENT_IFACE,
        "state_file": str(STATE_FILE),
        "problems": problems,
    }


def down() -> list[str]:
    """Remove everything ``up`` made (the image stays as a build cache). Idempotent.
    Returns what was removed."""
    _require_root("down")
    from tracer import dockerd

    removed: list[str] = []
    engine_error: TracerError | None = None
    with _locked():
        try:
            dc = dockerd.client(timeout=30)
            # by name only: containers others run from the lab image inherit its labels
            for c in dc.containers.list(all=True, filters={"name": "tracer-lab-"}):
                if not c.name.startswith("tracer-lab-"):  # the name filter matches substrings
                    continue
                c.remove(force=True)
                removed.append(f"container {c.name}")
        except TracerError as exc:
            engine_error = exc
        state = _read_state()
        pid = _kill_server(state)
        if pid:
            removed.append(f"server pid {pid}")
        ns_ino = _netns_inode(f"/run/netns/{NETNS}")
        removed += _delete_netns()
        if ns_ino is not None:
            stragglers = [p for p in _pids() if _netns_inode(f"/proc/{p}/ns/net") == ns_ino]
            if stragglers:
                _log(f"processes not started by the lab still run in the deleted netns: {stragglers}")
        if STATE_FILE.exists():
            STATE_FILE.unlink()
            removed.append(str(STATE_FILE))
        with contextlib.suppress(FileNotFoundError):
            (SERVER_ROOT / "index.html").unlink()
        for d in (SERVER_ROOT, LAB_DIR):
            with contextlib.suppress(OSError):
                d.rmdir()
    if engine_error:
        raise LabError(f"lab partly removed; containers could not be: {engine_error}")
    return removed


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]
