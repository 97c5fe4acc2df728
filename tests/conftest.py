"""Shared test helpers.

Tests that need root (BPF, network namespaces, the Docker engine) call
``require_root()`` or carry the ``root`` marker; without root they are skipped
with a reason that says how to run them (``sudo scripts/test.sh``).
"""

from __future__ import annotations

import os

import pytest

ROOT_REASON = "needs root (BPF, network namespaces, dockerd): run `sudo scripts/test.sh`"


def is_root() -> bool:
    return os.geteuid() == 0


def require_root(what: str = "this test") -> None:
    """Skip the calling test (or fixture) unless running as root."""
    if not is_root():
        pytest.skip(f"{what} {ROOT_REASON}")


@pytest.fixture
def root() -> None:
    """Request this fixture to skip a test when not root."""
    require_root()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is not None:
        require_root(item.name)
