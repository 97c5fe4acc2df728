"""tcpdump's pipes: `-` as a capture on standard input (show, stats, export)
and as the pcapng export's output (`tracer export --pcapng - cap.arrows |
tshark -r -`); `-w -` refused where standard output is taken. The live
`tracer record -w - | tracer show -` is in tests/e2e/test_pcap_filter.py's
neighbour, tests/e2e/test_pipes.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.unit.test_capture import REPO, table_of, write


def tracer(*args: str, stdin=None, input_bytes: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tracer", *args], cwd=REPO, stdin=stdin, input=input_bytes,
                          capture_output=True, timeout=120)


@pytest.fixture
def capture(tmp_path):
    path = tmp_path / "cap.arrows"
    write(path, [table_of(3), table_of(2, first_id=50, client_port=50000, t0=20 * 10**9)])
    return path


def test_show_and_stats_read_standard_input(capture):
    from_file = tracer("show", "--json", str(capture))
    piped = tracer("show", "--json", "-", input_bytes=capture.read_bytes())
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == from_file.stdout and len(piped.stdout.splitlines()) == 5
    assert tracer("show", "-r", "-", "--json", "tcp src port 50001", input_bytes=capture.read_bytes()).stdout.count(b"\n") == 1
    stats = tracer("stats", "--format", "json", "-", input_bytes=capture.read_bytes())
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["packets"] == 5


@pytest.mark.parametrize("data,words", [(b"", "not an Arrow IPC stream"), (b"GET / HTTP/1.1\r\n", "not an Arrow IPC stream")])
def test_bad_standard_input_is_one_line(data, words):
    done = tracer("show", "-", input_bytes=data)
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1 and words in lines[0] and b"Traceback" not in done.stderr


def test_standard_input_is_read_once(capture):
    done = tracer("show", "-", "-", input_bytes=capture.read_bytes())
    assert done.returncode != 0 and b"only once" in done.stderr and b"Traceback" not in done.stderr


def test_a_torn_pipe_keeps_what_came(capture):
    data = capture.read_bytes()
    done = tracer("show", "--json", "-", input_bytes=data[: len(data) - 40])
    assert done.returncode == 0, done.stderr
    assert 0 < len(done.stdout.splitlines()) < 5
    assert b"tracer: warning: standard input: recovered" in done.stderr and b"torn" in done.stderr


def test_pcapng_export_to_standard_output_opens_in_tshark(capture, tmp_path):
    out = tracer("export", "--pcapng", "-", str(capture))
    assert out.returncode == 0, out.stderr
    assert out.stdout[:4] == b"\x0a\x0d\x0d\x0a" and b"standard output" in out.stderr
    assert not (REPO / "-").exists()  # it used to write a file named '-'
    tshark = shutil.which("tshark")
    assert tshark, "tshark: scripts/setup.sh installs it"
    read = subprocess.run([tshark, "-r", "-", "-T", "fields", "-e", "frame.number"], input=out.stdout,
                          capture_output=True, timeout=120)
    assert read.returncode == 0, read.stderr
    assert len(read.stdout.split()) == 40  # every sighting of the five packets


def test_write_to_standard_output_is_refused_where_it_is_taken(tmp_path):
    for args, words in (
        (["trace", "-w", "-"], "standard output has the journeys"),
        (["latency", "-w", "-"], "standard output has the intervals"),
        (["record", "-w", "-", "--rotate-size", "1M"], "cannot be rotated"),
    ):
        done = tracer(*args)
        lines = done.stderr.decode().strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1 and words in lines[0], (args, done.stderr)


def test_rotation_ring_keeps_the_newest_files(tmp_path):
    """-W N: at most N rotated files, the oldest removed as a new one starts;
    what is left reads back as the newest rows."""
    from tracer.capture.reader import read_capture

    w = write(tmp_path / "cap.arrows", [table_of(5, first_id=10 * i + 1, t0=i * 10**9) for i in range(5)],
              rotate_size=1, max_files=2)
    assert [p.name for p in w.paths] == ["cap.0003.arrows", "cap.0004.arrows"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cap.0003.arrows", "cap.0004.arrows"]
    assert [p.name for p in w.removed] == ["cap.0000.arrows", "cap.0001.arrows", "cap.0002.arrows"]
    ids = set(read_capture([str(p) for p in w.paths]).events["packet_id"].to_pylist())
    assert ids == set(range(31, 36)) | set(range(41, 46))


def test_tcpdump_rotation_flags():
    from click.testing import CliRunner

    from tracer.cli import cli
    from tracer.cli.options import MegabytesType

    assert MegabytesType().convert("100", None, None) == 100_000_000  # tcpdump -C: millions of bytes
    assert MegabytesType().convert("10M", None, None) == 10 << 20
    for args, words in (
        (["-C", "0"], "not a size"),
        (["-C", "lots"], "not a size"),
        (["-W", "3"], "needs rotation"),
        (["-W", "0"], "-W"),
        (["-C", "10", "--rotate-size", "1M"], "one of -C and --rotate-size"),
    ):
        result = CliRunner().invoke(cli, ["record", "-w", "/nonexistent-dir/x.arrows", *args])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code != 0 and len(lines) == 1 and words in lines[0], (args, result.stderr)
    assert "-i, --iface" in CliRunner().invoke(cli, ["trace", "--help"]).stdout
