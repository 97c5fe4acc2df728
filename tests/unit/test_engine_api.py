"""tracer/engine_api.py: the Engine API reads over a unix socket, against a
small HTTP server of the test's own on a socket in a temporary directory
(no Docker needed; tests/e2e/test_inventory.py reads the real engine)."""

from __future__ import annotations

import json
import socketserver
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler

import pytest

from tracer import dockerd
from tracer.engine_api import EngineError, EngineReads, unix_socket_path


class _Engine(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as dockerd
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        self.seen.append(self.path)
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/_ping":
            self._send(200, b"OK", "text/plain")
        elif url.path == "/networks":
            self._send(200, json.dumps([{"Name": "bridge"}]).encode())
        elif url.path == "/containers/json":
            filters = json.loads(urllib.parse.parse_qs(url.query)["filters"][0])
            self._send(200, json.dumps([{"Id": "abc", "filters": filters}]).encode())
        elif url.path == "/containers/abc/json":
            self._send(200, json.dumps({"Id": "abc", "State": {"Running": True}}).encode())
        else:
            self._send(404, json.dumps({"message": "No such container: gone"}).encode())

    def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def engine(tmp_path):
    path = str(tmp_path / "docker.sock")
    server = _Server(path, _Engine)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Engine.seen = []
    yield path
    server.shutdown()
    server.server_close()


def test_the_reads_a_refresh_makes(engine):
    reads = EngineReads(engine, timeout=5)
    try:
        assert reads.ping()
        assert reads.networks() == [{"Name": "bridge"}]
        assert reads.containers(filters={"status": "running"}) == [{"Id": "abc", "filters": {"status": ["running"]}}]
        assert reads.inspect_container("abc")["State"]["Running"] is True
        with pytest.raises(EngineError, match="404 No such container"):
            reads.inspect_container("gone/../x")
        assert reads.networks(), "the connection goes on after an error answer"
    finally:
        reads.close()
    assert _Engine.seen[4] == "/containers/gone%2F..%2Fx/json", "an id is one path segment"


def test_docker_host_says_which_socket(monkeypatch):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert unix_socket_path(dockerd.engine_address()) == "/var/run/docker.sock"
    monkeypatch.setenv("DOCKER_HOST", "")
    assert unix_socket_path(dockerd.engine_address()) == "/var/run/docker.sock"
    assert unix_socket_path("unix:///run/other.sock") == "/run/other.sock"
    assert unix_socket_path("tcp://10.0.0.1:2375") is None, "not a socket: the SDK's client"
    assert unix_socket_path("ssh://me@host") is None


def test_no_engine_is_one_clear_error(tmp_path, monkeypatch, engine):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    with pytest.raises(dockerd.DockerUnavailable, match=r"^no Docker engine answers at unix://.*nothing\.sock \(.*\); run"):
        dockerd.engine_reads(timeout=2)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{engine}")
    reads = dockerd.engine_reads(timeout=2)
    assert reads is not None and reads.networks() == [{"Name": "bridge"}]
    reads.close()
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    assert dockerd.engine_reads(timeout=2) is None
