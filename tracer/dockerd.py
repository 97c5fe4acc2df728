"""The Docker engine as the rest of tracer sees it: a client that answers, or a
TracerError saying how to get one.

Starting the engine is the setup script's job (``scripts/lib-dockerd.sh``): there
is no systemd on these machines, so it backgrounds ``dockerd`` and logs to
``/var/log/tracer-dockerd.log``. Python only checks and explains.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from tracer.errors import TracerError, one_line

if TYPE_CHECKING:  # pragma: no cover
    import docker

    from tracer.kernel.probes import Capability

DEFAULT_SOCKET = "/var/run/docker.sock"
FIX_HINT = "run `sudo scripts/setup.sh` (it starts dockerd when none answers) or start dockerd yourself"


class DockerUnavailable(TracerError):
    exit_code = 1


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"


def client(timeout: int = 60, base_url: str | None = None) -> "docker.DockerClient":
    """The one way tracer reaches the engine (inventory, lab, doctor): a
    docker SDK client whose engine answered a ping, at ``base_url`` or as
    the environment says (DOCKER_HOST, else the default socket), or
    DockerUnavailable in one line. ``timeout`` is the caller's: seconds a
    request may take (the lab pulls and builds; tracing and doctor must not
    hang on a stuck engine)."""
    try:
        import docker  # imported late: the CLI's --help should not pay for it
    except ImportError as exc:  # pragma: no cover - the package depends on it
        raise DockerUnavailable(f"the docker Python package is missing ({exc}); reinstall tracer") from None
    c = None
    try:
        c = docker.DockerClient(base_url=base_url, timeout=timeout) if base_url else docker.from_env(timeout=timeout)
        c.ping()
    except Exception as exc:  # DockerException, requests errors, socket errors, a bad URL scheme
        if c is not None:
            c.close()
        raise _no_engine(base_url or engine_address(), one_line(exc, 160)) from None
    return c


def _no_engine(address: str, reason: str) -> DockerUnavailable:
    return DockerUnavailable(f"no Docker engine answers at {address} ({reason}); {FIX_HINT}")




def engine_reads(timeout: int = 60):
    """The engine's reads without the SDK (tracer/engine_api.py), on its
    unix socket, once it answered a ping; None when DOCKER_HOST is not a
    unix socket (the SDK's client then); DockerUnavailable in one line, as
    ``client`` says it, when nothing answers."""
    from tracer.engine_api import EngineReads, unix_socket_path

    path = unix_socket_path(engine_address())
    if path is None:
        return None
    reads = EngineReads(path, timeout)
    try:
        if reads.ping():
            return reads
        reason = "its ping did not answer OK"
    except Exception as exc:  # OSError (no socket, refused), http.client errors, a timeout
        reason = one_line(exc, 160)
    reads.close()
    raise _no_engine(engine_address(), reason)


def probe() -> "Capability":
    """`tracer doctor`'s docker row: the engine reached as tracing reaches it."""
    from tracer.kernel.probes import Capability

    fix = "start the engine: dockerd & (scripts/setup.sh does it)"
    try:
        c = client(timeout=3)
    except DockerUnavailable as exc:
        return Capability("docker", False, f"engine not reachable: {exc}"[:160], True, fix)
    try:
        version = c.version().get("Version", "?")
    except Exception as exc:  # noqa: BLE001 - the engine went away between the ping and this
        return Capability("docker", False, f"engine not reachable: {one_line(exc, 120)}", True, fix)
    finally:
        c.close()
    return Capability("docker", True, f"engine {version} reachable", True, fix)
