"""The Docker Engine API reads a start makes (ping, networks, running
containers, inspect), over the engine's unix socket with http.client.

The docker SDK's import and client cost ~60 ms of CPU on every start
(requests, urllib3 and the SDK itself), its calls there ~4 ms
(docs/benchmarks.md, session 20). It stays for the events stream (the
inventory's watch thread, after the start), the lab and doctor, and for an
engine that is not on a unix socket (DOCKER_HOST tcp://, ssh://, TLS). The
answers are the Engine API's JSON as the SDK's low-level client returns it.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from typing import Any


class EngineError(Exception):
    """The engine answered a read with an error status (e.g. 404: the
    container went away between the list and the inspect)."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def unix_socket_path(address: str) -> str | None:
    """The socket of an engine address (tracer/dockerd.py engine_address:
    DOCKER_HOST, else the default socket), or None when it is not a unix
    socket's."""
    path = address[len("unix://"):] if address.startswith("unix://") else ""
    return path or None


def _filters(filters: dict[str, Any]) -> str:
    """As the SDK sends them: each value a list."""
    return json.dumps({k: v if isinstance(v, list) else [v] for k, v in filters.items()})


class EngineReads:
    """One keep-alive connection to the engine; calls are not concurrent
    (the inventory makes them under its lock)."""

    def __init__(self, path: str, timeout: float) -> None:
        self._conn = _UnixConnection(path, timeout)

    def _get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            self._conn.request("GET", path + (f"?{query}" if query else ""))
            response = self._conn.getresponse()
            body = response.read()
        except BaseException:
            self._conn.close()  # a half-read answer must not meet the next request
            raise
        if response.status != 200:
            try:
                message = json.loads(body).get("message", "")
            except (ValueError, AttributeError):
                message = body[:200].decode(errors="replace")
            raise EngineError(f"{path}: {response.status} {message}".strip())
        return json.loads(body) if body.startswith((b"{", b"[")) else body.decode(errors="replace")

    def ping(self) -> bool:
        return self._get("/_ping") == "OK"

    def networks(self) -> list[dict]:
        return self._get("/networks")

    def containers(self, filters: dict[str, Any] | None = None) -> list[dict]:
        return self._get("/containers/json", **({"filters": _filters(filters)} if filters else {}))

    def inspect_container(self, container_id: str) -> dict:
        return self._get(f"/containers/{urllib.parse.quote(container_id, safe='')}/json")

    def close(self) -> None:
        self._conn.close()
