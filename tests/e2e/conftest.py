"""End-to-end fixtures: the real kernel, the real dockerd, the lab.

Every test under tests/e2e needs root and is skipped without it.
The ``lab`` fixture brings the lab up once per session (idempotent, about
0.3 s when it is already up) and yields ``tracer lab status --json``'s dict.
Afterwards the lab is left as the session found it: taken down again if the
tests brought it up (netns, veth, container, client server), left up if it
was up already (someone's `tracer lab up` or demo, which they share).
"""

from __future__ import annotations

import pytest

from tests.conftest import require_root


def pytest_runtest_setup(item: pytest.Item) -> None:
    require_root(item.name)


@pytest.fixture(scope="session")
def lab():
    require_root("the lab")
    from tracer import lab as lab_mod

    was_up = lab_mod.status()["up"]
    status = lab_mod.up()
    assert status["up"], status["problems"]
    yield status
    if not was_up:
        lab_mod.down()


@pytest.fixture(scope="module")
def small_kernel():
    """The journey programs loaded with a small journey pool (one per test
    module: tests/e2e/journey_kernel.py), for the journey and race cases."""
    from tests.e2e.journey_kernel import SMALL_POOL, Kernel

    k = Kernel(pool=SMALL_POOL)
    yield k
    k.close()


@pytest.fixture
def small(small_kernel):
    """small_kernel with every journey flushed and its records read before
    and after the test."""
    small_kernel.sweeper.flush()
    small_kernel.records()
    yield small_kernel
    small_kernel.sweeper.flush()
    small_kernel.records()
