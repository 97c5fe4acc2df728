"""Bad input on the command line: one line on stderr, a non-zero exit, no
traceback, for every command that takes it (the live commands refuse it
before any kernel work, so these run without touching the kernel)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tests.unit.test_capture import table_of, write
from tracer.cli import cli

LIVE = ("trace", "record -w {tmp}/x.arrows", "latency")


def run(args: list[str], env: dict | None = None):
    return CliRunner().invoke(cli, args, env=env)


def assert_one_line_error(result, *words: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code != 0, result.output
    assert len(lines) == 1 and lines[0].startswith("tracer: error:"), result.stderr
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture
def capture(tmp_path):
    path = tmp_path / "cap.arrows"
    write(path, [table_of(3)])
    return path


BAD_TARGETS = [
    (["--port", "70000"], "70000"),
    (["--port", "-1"], "-1"),
    (["--port", "0"], "0"),
    (["--port", "http"], "http"),
    (["--host", "nothost"], "nothost"),
    (["--host", "1.2.3"], "1.2.3"),
    (["--host", "198.18.0.256"], "198.18.0.256"),
    (["--host", "fd00::1::2"], "fd00::1::2"),
    (["--host", "fd00:198:18::1/64"], "fd00:198:18::1/64"),
    (["--host", "[fd00::1"], "[fd00::1"),
    (["--proto", "sctp"], "sctp"),
    (["--proto", ""], "--proto"),
]


@pytest.mark.parametrize("args,word", BAD_TARGETS)
def test_show_refuses_bad_targets(capture, args, word):
    assert_one_line_error(run(["show", *args, str(capture)]), word)


@pytest.mark.parametrize("args,word", BAD_TARGETS)
@pytest.mark.parametrize("command", LIVE)
def test_live_commands_refuse_bad_targets(tmp_path, command, args, word):
    assert_one_line_error(run([*command.format(tmp=tmp_path).split(), *args]), word)


def test_proto_is_the_same_choice_everywhere(capture):
    """--proto takes tcp/udp/icmp/icmp6 in any case in trace and show alike."""
    result = run(["show", "--json", "--proto", "TCP", str(capture)])
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 3
    for command in ("trace", "latency", "show"):
        help_text = run([command, "--help"]).stdout
        assert "[tcp|udp|icmp|icmp6]" in help_text, command


@pytest.mark.parametrize("args", [["--count", "0"], ["-c", "-3"], ["-c", "many"]])
def test_bad_counts(capture, tmp_path, args):
    assert_one_line_error(run(["show", *args, str(capture)]))
    assert_one_line_error(run(["trace", *args]))


def test_show_host_is_matched_not_silently_empty(capture):
    """A valid host that is in the capture finds its packets; one that is
    not finds none (and says so in the summary)."""
    hit = run(["show", "--json", "--host", "198.18.0.2", str(capture)])
    assert hit.exit_code == 0 and len(hit.stdout.splitlines()) == 3
    miss = run(["show", "--json", "--host", "198.18.0.9", str(capture)])
    assert miss.exit_code == 0 and miss.stdout == "" and "0 packets" in miss.stderr


def test_no_color_and_summary_on_stderr(capture):
    forced = run(["show", "--color", str(capture)], env={"NO_COLOR": "1"})
    assert "\x1b[" in forced.stdout  # an explicit flag beats NO_COLOR
    from tracer.cli.options import use_color

    class Tty:
        def isatty(self):
            return True

    assert use_color(None, Tty()) is True
    import os

    saved = os.environ.get("NO_COLOR")
    os.environ["NO_COLOR"] = "1"
    try:
        assert use_color(None, Tty()) is False
        assert use_color(True, Tty()) is True
    finally:
        if saved is None:
            del os.environ["NO_COLOR"]
        else:
            os.environ["NO_COLOR"] = saved
    plain = run(["show", str(capture)])
    assert "summary" not in plain.stdout and "summary" in plain.stderr


def test_ids_print_one_way_and_filter_show(capture):
    """The id a journey header shows is the JSON's, and what --packet/--flow
    take (as is a capture column's integer); ids are whole, so unique on screen."""
    import json

    shown = run(["show", "--no-color", str(capture)]).stdout
    headers = [line for line in shown.splitlines() if not line.startswith(" ")]
    texts = [line.split()[1][1:] for line in headers]  # after the time of day
    assert len(set(texts)) == len(texts) == 3
    as_json = [json.loads(x) for x in run(["show", "--json", str(capture)]).stdout.splitlines()]
    assert [j["packet_id"] for j in as_json] == texts
    flow = headers[0].split("flow ")[1].split()[0]
    assert flow == as_json[0]["flow_id"]

    def ids(*args):
        return [json.loads(x)["packet_id"] for x in run(["show", "--json", *args, str(capture)]).stdout.splitlines()]

    assert ids("--packet", texts[1]) == [as_json[1]["packet_id"]]
    assert ids("--packet", f"#{texts[1]}") == ids("--packet", str(int(as_json[1]["packet_id"], 16))) == [as_json[1]["packet_id"]]
    assert ids("--packet", texts[0], "--packet", texts[2]) == [as_json[0]["packet_id"], as_json[2]["packet_id"]]
    assert ids("--flow", flow) == [j["packet_id"] for j in as_json if j["flow_id"] == as_json[0]["flow_id"]]
    assert ids("--packet", "fffffff") == []


@pytest.mark.parametrize("value", ["zz", "-1", "0", "", "0x", "1" * 30])
def test_bad_ids(capture, value):
    assert_one_line_error(run(["show", "--packet", value, str(capture)]), "--packet")
    assert_one_line_error(run(["show", "--flow", value, str(capture)]), "--flow")
