"""Lab traffic: real requests between the lab's own endpoints only (the
client netns and the lab container), used by the demo, tests and benchmarks."""

from __future__ import annotations

import subprocess

from tracer.errors import TracerError
from tracer.lab_base import busybox


def _run(cmd: list[str], timeout: float) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TracerError(f"timed out: {' '.join(cmd)}") from None
    if done.returncode != 0:
        raise TracerError(f"{' '.join(cmd)} failed: {done.stderr.strip() or done.returncode}")
    return done.stdout


def client_http_get(status: dict, path: str = "/", port: int | None = None, timeout: float = 10) -> str:
    """GET host:port from the lab's client netns (goes through DNAT)."""
    url = f"http://{status['host_address']}:{port or status['port']}{path}"
    return _run(["ip", "netns", "exec", status["netns"], busybox(), "wget", "-q", "-O-", url], timeout)


def container_http_get(status: dict, timeout: float = 10) -> str:
    """GET the client netns server from the container (goes out through MASQUERADE)."""
    url = f"http://{status['server_address']}:{status['server_port']}/"
    return _run(["docker", "exec", status["container"], "wget", "-q", "-O-", url], timeout)
