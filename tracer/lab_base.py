"""What every part of the lab (tracer/lab.py) shares: its names and addresses
(the lab contract other code and tests rely on), LabError, and the shell
helpers (`ip -j`, the host's busybox)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def _run(cmd: list[str], *, check: bool = True, timeout: float = 30, input: str | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input, env=env)
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
