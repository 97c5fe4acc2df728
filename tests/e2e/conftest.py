"""End-to-end fixtures: the real kernel, the real dockerd, the lab.

Every test under tests/e2e needs root and is skipped without it.
The ``lab`` fixture brings the lab up once per session (idempotent, about
0.3 s when it is already up) and yields ``tracer lab status --json``'s dict.
The lab is left up afterwards: other sessions and engineers share it, and
``tracer lab down`` removes it.
"""

from __future__ import annotations

import pytest

from tests.conftest import require_root


def pytest_runtest_setup(item: pytest.Item) -> None:
    require_root(item.name)


@pytest.fixture(scope="session")
def lab() -> dict:
    require_root("the lab")
    from tracer import lab as lab_mod

    status = lab_mod.up()
    assert status["up"], status["problems"]
    return status
