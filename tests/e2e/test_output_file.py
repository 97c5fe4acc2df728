"""`tracer trace --json > FILE` and `tracer trace > FILE`: the output
written with O_DIRECT (tracer/direct_output.py) or written back and dropped
from the page cache as it grows (tracer/written_pages.py), and every byte
as written. The reference is the same run's capture (`-w`) replayed by `show
--json` to a pipe, which leaves the cache alone; `show --json > FILE`
drops its pages too and writes the same bytes."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.e2e.tracing import REPO, Tracer

STRETCHES = 3  # of tracer.written_pages.STEP (8 MiB): enough output for two to be dropped


def _resident(path) -> int:
    """Bytes of ``path`` in the page cache (util-linux fincore)."""
    done = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                          capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


def test_json_to_a_file_drops_its_pages_and_keeps_its_bytes(lab, tmp_path):
    from tracer.written_pages import STEP

    out, capture = tmp_path / "trace.json", tmp_path / "trace.arrows"
    t = Tracer("--port", str(lab["port"]), "--duration", "300", "-w", str(capture), stdout_file=out)
    t.wait_ready()
    url = f"http://{lab['host_address']}:{lab['port']}/"
    deadline = time.monotonic() + 120
    while True:  # requests until the output is a few stretches long and the tracer has dropped one
        subprocess.run(["ip", "netns", "exec", lab["netns"], "ab", "-q", "-n", "1000", "-c", "8", "-s", "10", url],
                       capture_output=True, timeout=120)
        size = out.stat().st_size
        if size >= STRETCHES * STEP and _resident(out) <= size - STEP:
            break
        assert t.proc.poll() is None and time.monotonic() < deadline, (
            f"{size} bytes written, {_resident(out)} of them still cached")
    t.stop()
    assert t.returncode == 0, t.stderr
    assert "Exception in thread" not in t.stderr and "writing the output file" not in t.stderr, t.stderr  # the thread's
    written = out.read_bytes()
    piped = subprocess.run([sys.executable, "-m", "tracer", "show", "--json", str(capture)], cwd=REPO,
                           capture_output=True, timeout=300)
    assert piped.returncode == 0, piped.stderr[-2000:]
    assert len(written) >= STRETCHES * STEP and written == piped.stdout  # byte for byte what `trace` printed
    shown = tmp_path / "show.json"
    with open(shown, "wb") as f:
        done = subprocess.run([sys.executable, "-m", "tracer", "show", "--json", str(capture)], cwd=REPO, stdout=f,
                              stderr=subprocess.PIPE, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert b"Exception in thread" not in done.stderr and b"writing the output file" not in done.stderr, done.stderr
    assert shown.read_bytes() == written


def test_text_to_a_file_keeps_its_bytes_and_no_pages(lab, tmp_path):
    """The human text goes into the direct output's stage (no copy): every
    byte is the one `show` prints of the same run's capture, and the file
    is not left in the page cache."""
    out, capture = tmp_path / "trace.txt", tmp_path / "trace.arrows"
    t = Tracer("--port", str(lab["port"]), "--duration", "300", "-w", str(capture), stdout_file=out, json_out=False)
    t.wait_ready()
    url = f"http://{lab['host_address']}:{lab['port']}/"
    subprocess.run(["ip", "netns", "exec", lab["netns"], "ab", "-q", "-n", "1000", "-c", "8", "-s", "10", url],
                   capture_output=True, timeout=120)
    t.stop()
    assert t.returncode == 0, t.stderr
    assert "Exception in thread" not in t.stderr, t.stderr
    resident = _resident(out)  # before this test reads it
    written = out.read_bytes()
    assert written.count(b"\n") > 10_000 and resident < len(written) // 2
    piped = subprocess.run([sys.executable, "-m", "tracer", "show", str(capture)], cwd=REPO,
                           capture_output=True, timeout=300)
    assert piped.returncode == 0, piped.stderr[-2000:]
    assert written == piped.stdout  # byte for byte what `trace` printed
