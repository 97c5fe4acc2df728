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


def pytest_sessionstart(session: pytest.Session) -> None:
    """A tracer._native older than native/ (a pull without setup.sh) stops
    the run in one line that says what to run, instead of failing every
    test that compares the compiled paths with the Python ones (about 50,
    each saying less). scripts/test.sh runs setup.sh first, which rebuilds
    it when native/ changed: this is for pytest run by hand."""
    from tracer import native

    if native.native() is None and native.why_not().startswith(native.STALE):
        pytest.exit(native.why_not(), returncode=pytest.ExitCode.TESTS_FAILED)
