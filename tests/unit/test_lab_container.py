"""The lab's end-to-end check's polling (tracer/lab_container.py): retried
until it succeeds, the last answer in the error past the deadline."""

from __future__ import annotations

import time

import pytest

from tracer import lab_container
from tracer.lab_base import LabError


def test_until_retries_until_the_attempt_succeeds(monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)
    answers = iter([(False, "refused"), (False, "timeout"), (True, "page")])
    calls = []

    def attempt():
        calls.append(1)
        return next(answers)

    lab_container._until(time.monotonic() + 60, attempt, lambda got: f"failed ({got})")
    assert len(calls) == 3


def test_until_past_the_deadline_names_the_last_answer(monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)
    answers = iter([(False, "refused"), (False, "timeout")])
    clock = iter([0.0, 10.0])
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    with pytest.raises(LabError, match=r"^GET failed \(timeout\)$"):
        lab_container._until(5.0, lambda: next(answers), lambda got: f"GET failed ({got})")


def test_verify_checks_the_three_paths_in_order(monkeypatch):
    """Client -> DNAT, container -> MASQUERADE -> client, container -> host
    port -> itself; each failure names its own path."""
    seen = []

    class Done:
        returncode, stdout, stderr = 0, lab_container.INDEX_MARKER, ""

    monkeypatch.setattr(lab_container, "_client_get", lambda url: seen.append(("client", url)) or Done())

    def container_get(c, url):
        seen.append(("container", url))
        return (0, lab_container.SERVER_MARKER) if url.endswith(f":{lab_container.SERVER_PORT}/") else (1, "wget: refused")

    monkeypatch.setattr(lab_container, "_container_get", container_get)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    with pytest.raises(LabError, match=r"from tracer-lab-web, GET http://198\.18\.0\.1:8000/ failed \(wget: refused\); check docker-proxy"):
        lab_container._verify(object(), timeout=0)
    assert seen[:3] == [("client", "http://198.18.0.1:8000/"), ("container", "http://198.18.0.2:9000/"),
                        ("container", "http://198.18.0.1:8000/")]
