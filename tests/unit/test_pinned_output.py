"""`show`'s output for one recorded capture, pinned byte for byte: a
restructuring must not change what users see (`show --json` is `trace
--json`'s format, and the text is `trace`'s).

tests/data/lab-http.arrows was recorded on the lab (`tracer record --port
8000`, three HTTP GETs from the client netns from source ports 65101-65103).
When a change means to alter the output, regenerate the pinned files with
`.venv/bin/python -m tests.unit.test_pinned_output` and review their diff."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

DATA = Path(__file__).resolve().parent.parent / "data"
CAPTURE = str(DATA / "lab-http.arrows")
PINNED = DATA / "pinned"

CASES = {
    "show.jsonl": ["show", "--json", CAPTURE],
    "show.txt": ["show", "--no-color", CAPTURE],
    "show-port.jsonl": ["show", "--json", "--port", "65102", CAPTURE],
    "show-host-proto-count.jsonl": ["show", "--json", "--proto", "tcp", "--host", "172.17.0.2", "-c", "7", CAPTURE],
    "show-container.txt": ["show", "--no-color", "--container", "tracer-lab-web", "--port", "65103", CAPTURE],
    "show-container-id.jsonl": ["show", "--json", "--container", "deadbeef", CAPTURE],
    "show-udp.jsonl": ["show", "--json", "--proto", "udp", CAPTURE],
    "show-expression.jsonl": ["show", "--json", "-r", CAPTURE, "tcp[tcpflags] & tcp-fin != 0"],
    "show-packet-flow.jsonl": ["show", "--json", "--packet", "10000000002", "--flow", "81664aa5a22a", CAPTURE],
}


def run(args: list[str]) -> bytes:
    from tracer.cli import cli

    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """The text shows local wall-clock times."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("name", sorted(CASES))
def test_show_output_is_as_pinned(name):
    pinned = (PINNED / name).read_bytes()
    assert run(CASES[name]) == pinned, f"`tracer {' '.join(CASES[name])}` differs from tests/data/pinned/{name}"


def test_the_pins_are_not_empty():
    """The filters each keep something and leave something out (a pin of
    nothing pins nothing), but for the cases that must select nothing."""
    everything = len((PINNED / "show.jsonl").read_bytes().splitlines())
    assert everything > 30
    for name in CASES:
        lines = len((PINNED / name).read_bytes().splitlines())
        if name in ("show-container-id.jsonl", "show-udp.jsonl"):
            assert lines == 0, name
        elif name != "show.jsonl" and name.endswith(".jsonl"):
            assert 0 < lines < everything, name


if __name__ == "__main__":  # regenerate the pinned files
    os.environ["TZ"] = "UTC"
    time.tzset()
    PINNED.mkdir(exist_ok=True)
    for name, args in CASES.items():
        (PINNED / name).write_bytes(run(args))
        print(f"wrote tests/data/pinned/{name}", file=sys.stderr)
