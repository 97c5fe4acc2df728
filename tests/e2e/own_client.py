"""A client netns of a test's own, beside the shared lab (issue 13).

The lab is shared: other engineers' tests send traffic through it at the same
time, so a capture of "the demo's traffic" made with the lab's client would
hold their connections too, some cut in half at the capture's start or end
(which Wireshark rightly warns about). This netns is ours alone: the demo's
paths (DNAT to the lab container's published port, and MASQUERADE from the
container to a server here) with addresses nobody else uses, so a tracer
filtered on them sees only our packets. Everything is removed afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.e2e.tracing import Tracer
from tracer import traffic
from tracer.lab_base import busybox

# Names and a /30 of this test process's own: other engineers may run these
# tests at the same time on the same machine (the lab's is 198.18.0.0/30).
_K = 2 + os.getpid() % 250
NETNS = f"tracer13-{_K}"
HOST_IF, CLIENT_IF = f"tr13-{_K}h", f"tr13-{_K}c"
HOST_ADDR, CLIENT_ADDR = f"198.18.{_K}.1", f"198.18.{_K}.2"
SERVER_PORT = 9013


def _ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)


class OwnClient:
    """Context manager: the netns, its veth pair and an HTTP server in it.
    ``status`` looks like `tracer lab status --json` for tracer.traffic."""

    def __init__(self, lab: dict) -> None:
        self.status = {
            "netns": NETNS, "host_address": HOST_ADDR, "client_address": CLIENT_ADDR, "port": lab["port"],
            "server_address": CLIENT_ADDR, "server_port": SERVER_PORT, "container": lab["container"],
        }
        self._server: subprocess.Popen | None = None
        self._www = tempfile.TemporaryDirectory(prefix="tracer13-www-")

    def __enter__(self) -> "OwnClient":
        self.remove()  # a run killed before its teardown
        try:
            _ip("netns", "add", NETNS)
            _ip("link", "add", HOST_IF, "type", "veth", "peer", "name", CLIENT_IF, "netns", NETNS)
            _ip("addr", "add", f"{HOST_ADDR}/30", "dev", HOST_IF)
            _ip("link", "set", HOST_IF, "up")
            _ip("addr", "add", f"{CLIENT_ADDR}/30", "dev", CLIENT_IF, netns=NETNS)
            _ip("link", "set", CLIENT_IF, "up", netns=NETNS)
            _ip("link", "set", "lo", "up", netns=NETNS)
            _ip("route", "add", "default", "via", HOST_ADDR, netns=NETNS)
            Path(self._www.name, "index.html").write_text("tracer issue 13\n")
            self._server = subprocess.Popen(
                ["ip", "netns", "exec", NETNS, busybox(), "httpd", "-f", "-p", f"{CLIENT_ADDR}:{SERVER_PORT}", "-h", self._www.name],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            self._wait_reachable()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_reachable(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                traffic.client_http_get(self.status, timeout=5)
                traffic.container_http_get(self.status, timeout=5)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def requests(self, n: int) -> None:
        """The demo's traffic: n GETs through DNAT, one out through MASQUERADE."""
        for _ in range(n):
            traffic.client_http_get(self.status)
        traffic.container_http_get(self.status)

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.kill()  # our own process, by its handle
            self._server.wait(10)
            self._server = None
        self.remove()
        self._www.cleanup()

    @staticmethod
    def remove() -> None:
        # deleting the netns removes the veth pair with it
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", HOST_IF], capture_output=True, timeout=30)


def record_demo(lab: dict, path: Path, requests: int = 5) -> Path:
    """A capture of the demo's traffic from our own client only (`tracer
    record --host` on its address): requests through DNAT, one connection
    out through MASQUERADE."""
    with OwnClient(lab) as client:
        rec = Tracer("--host", CLIENT_ADDR, "-w", str(path), "--duration", "60", command="record", json_out=False)
        rec.wait_ready()
        client.requests(requests)
        time.sleep(0.6)  # journeys complete after the joining window
        rec.stop(signal.SIGINT)
    assert rec.returncode == 0, rec.stderr
    return path
