"""The human text of lab, doctor, sql and the CLI's error lines, from
tracer/render_commands.py: pinned as the commands printed it before it
moved there."""

from __future__ import annotations

from types import SimpleNamespace

from tracer.render_commands import (columns_text, doctor_missing_line, doctor_text, error_line, gave_up_line,
                                    lab_removed_text, lab_status_text, os_error_line, report_written_line, sql_cell,
                                    warning_line)
from tracer.units import seconds_text, size_text, spaced_duration_text

LAB = {"up": True, "netns": "tracer-client", "client_address": "198.18.0.2", "host_address": "198.18.0.1",
       "port": 8000, "container": "tracer-lab-web", "container_ip": "172.17.0.2", "container_port": 8080,
       "server_address": "198.18.0.2", "server_port": 9000, "userland_proxy": True, "dockerd_switched": False,
       "problems": []}


def test_lab_status_line_as_printed():
    assert lab_status_text(LAB) == (
        "lab up: client netns tracer-client (198.18.0.2) -> 198.18.0.1:8000 -> tracer-lab-web "
        "(172.17.0.2:8080); server 198.18.0.2:9000; userland proxy on (docker-proxy)")


def test_lab_status_not_up_lists_problems():
    st = {**LAB, "up": False, "container_ip": None, "userland_proxy": None,
          "problems": ["container tracer-lab-web missing", "server 198.18.0.2:9000 in tracer-client not running"]}
    lines = lab_status_text(st).split("\n")
    assert lines[0].startswith("lab not up: ") and "(-:8080)" in lines[0] and lines[0].endswith("userland proxy unknown")
    assert lines[1:] == ["  - container tracer-lab-web missing",
                         "  - server 198.18.0.2:9000 in tracer-client not running"]


def test_lab_removed():
    assert lab_removed_text([]) == "removed: nothing (lab was not up)"
    assert lab_removed_text(["container tracer-lab-web", "server pid 12"]) == \
        "removed: container tracer-lab-web, server pid 12"


def _cap(name, ok, detail, required=True, fix=None):
    return SimpleNamespace(name=name, ok=ok, status="ok" if ok else "missing", detail=detail, required=required, fix=fix)


def test_doctor_table_aligned_as_printed():
    caps = [_cap("root", True, "euid 0"), _cap("kprobes", False, "no kprobe PMU", required=False)]
    sensors = [{"name": "tc", "ok": True, "optional": False, "needs": ["tc"], "missing": []},
               {"name": "proxy", "ok": False, "optional": True, "needs": ["raw_tracepoints", "socket_tracepoints"],
                "missing": ["socket_tracepoints"]}]
    assert doctor_text(caps, sensors).split("\n") == [
        "capability    status                  detail",
        "root          ok                      euid 0",
        "kprobes       missing (optional)      no kprobe PMU",
        "sensor:tc     ok                      needs tc",
        "sensor:proxy  unavailable (optional)  needs raw_tracepoints, socket_tracepoints; missing socket_tracepoints",
    ]
    assert doctor_missing_line(_cap("bcc", False, "not installed", fix="apt-get install python3-bpfcc")) == \
        "missing bcc: apt-get install python3-bpfcc"
    assert doctor_missing_line(_cap("bcc", False, "not installed")) == "missing bcc: not installed"


def test_columns_pad_all_but_strip_trailing():
    assert columns_text([["a", "bb"], ["ccc", ""], ["d", "e"]]) == "a    bb\nccc\nd    e"
    assert sql_cell(None) == "NULL" and sql_cell(3) == "3"


def test_error_lines_are_one_escaped_line():
    assert error_line("bad\nthing") == "tracer: error: bad thing"
    assert "\x1b" not in error_line("name \x1b[31mred")
    assert os_error_line(OSError(28, "No space left on device", "/tmp/x")) == \
        "tracer: error: /tmp/x: No space left on device"
    assert warning_line("cut short") == "tracer: warning: cut short"
    assert gave_up_line(10.0) == ("tracer: error: still not stopped 10 s after being asked to; giving up "
                                  "(please report: where each thread was follows)")


def test_units_of_the_report():
    assert report_written_line("r.html", 1_234_567) == "tracer: wrote r.html (1,235 kB)"
    assert size_text(1_234_567, "kB") == "1,234.6 kB"
    assert [spaced_duration_text(v) for v in (850, 2_100, 21_300_000, 1.2e9, float("nan"))] == \
        ["850 ns", "2.1 µs", "21.3 ms", "1.20 s", "-"]
    assert [seconds_text(v) for v in (2, 0.05, 0.0005)] == ["2 s", "50 ms", "500 µs"]


def test_sql_times_as_text_keeps_the_nanoseconds():
    import pyarrow as pa

    from tracer.render_commands import sql_times_as_text

    batch = pa.record_batch({"time": pa.array([1796016575209749850, None], pa.timestamp("ns", tz="Etc/UTC")),
                             "naive": pa.array([1796016575209749850, 0], pa.timestamp("ns")),
                             "n": pa.array([1, 2])})
    out = sql_times_as_text(batch).to_pylist()
    assert out == [{"time": "2026-11-30T05:29:35.209749850Z", "naive": "2026-11-30T05:29:35.209749850", "n": 1},
                   {"time": None, "naive": "1970-01-01T00:00:00.000000000", "n": 2}]


def test_sql_prints_the_time_column_of_a_real_capture():
    """`time` (ns, UTC) used to end in a pyarrow traceback: datetime holds µs."""
    from pathlib import Path

    from click.testing import CliRunner

    from tracer.cli import cli

    capture = Path(__file__).parent.parent / "data" / "lab-http.arrows"
    for fmt in ("table", "csv", "json"):
        result = CliRunner().invoke(cli, ["sql", "--format", fmt, "SELECT time FROM sightings ORDER BY ktime_ns LIMIT 1",
                                          str(capture)])
        assert result.exit_code == 0, result.output
        assert "2026-11-30T05:29:35.209749850Z" in result.output
