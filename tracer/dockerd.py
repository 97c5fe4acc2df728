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

DEFAULT_SOCKET = "/var/run/docker.sock"
FIX_HINT = "run `sudo scripts/setup.sh` (it starts dockerd when none answers) or start dockerd yourself"


class DockerUnavailable(TracerError):
    exit_code = 1


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"


def client(timeout: int = 60) -> "docker.DockerClient":
    """A docker SDK client whose engine answered a ping."""
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - the package depends on it
        raise DockerUnavailable(f"the docker Python package is missing ({exc}); reinstall tracer") from exc
    try:
        c = docker.from_env(timeout=timeout)
        c.ping()
    except Exception as exc:  # DockerException, requests errors, socket errors
        reason = one_line(exc, 160)
        raise DockerUnavailable(
            f"no Docker engine answers at {engine_address()} ({reason}); {FIX_HINT}"
        ) from exc
    return c


