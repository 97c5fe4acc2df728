"""`tracer record -w - | tracer show -`: a live capture on a pipe, replayed
by the reader as it comes, the same journeys `trace` would print."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

from tests.e2e.tracing import REPO
from tracer import traffic


def test_record_to_a_pipe_and_show_from_it(lab):
    record = subprocess.Popen([sys.executable, "-m", "tracer", "record", "-w", "-", "--port", str(lab["port"]),
                               "--duration", "60"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    show = subprocess.Popen([sys.executable, "-m", "tracer", "show", "--json", "-"], cwd=REPO, stdin=record.stdout,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    record.stdout.close()  # the reader owns the pipe now
    # show's output and stderr read as they come: the shared lab's other
    # traffic on the port can fill either pipe, and a show blocked on one blocks record
    shown: list[tuple[bytes, bytes]] = []
    reader = threading.Thread(target=lambda: shown.append(show.communicate()), daemon=True)
    reader.start()
    err = b""
    deadline = time.monotonic() + 60
    while b"Ctrl-C" not in err and time.monotonic() < deadline:
        err += record.stderr.readline()
    assert b"Ctrl-C" in err, err
    for _ in range(3):
        traffic.client_http_get(lab)
    time.sleep(1.0)
    record.send_signal(signal.SIGINT)
    rec_err = err + record.communicate(timeout=30)[1]
    assert record.returncode == 0, rec_err
    reader.join(60)
    if not shown:
        show.kill()
    assert shown, "tracer show had not ended 60 s after record did"
    out, show_err = shown[0]
    assert show.returncode == 0, show_err
    journeys = [json.loads(line) for line in out.splitlines()]
    assert len(journeys) >= 3 * 8, (rec_err, show_err)
    assert {"original", "reply"} <= {j["direction"] for j in journeys}  # (a stray packet of the shared lab may have none)
    assert all(j["time"] and j["ktime_ns"] for j in journeys)
    assert b"to standard output" in rec_err and b"summary" in show_err


def test_record_with_tcpdump_rotation_flags_keeps_a_ring(lab, tmp_path):
    """`record -C 0.002 -W 2`: files of about 2 kB, the two newest kept."""
    path = tmp_path / "ring.arrows"
    record = subprocess.Popen([sys.executable, "-m", "tracer", "record", "-w", str(path), "-C", "0.002", "-W", "2",
                               "--port", str(lab["port"]), "--duration", "60", "--quiet"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err = b""
    deadline = time.monotonic() + 60
    while b"Ctrl-C" not in err and time.monotonic() < deadline:
        err += record.stderr.readline()
    assert b"Ctrl-C" in err, err
    for _ in range(8):
        traffic.client_http_get(lab)
        time.sleep(0.3)  # flushed at least once a second: several files
    time.sleep(1.2)
    record.send_signal(signal.SIGINT)
    err += record.stderr.read()
    assert record.wait(30) == 0, err
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0] != "ring.0000.arrows", (files, err)
    shown = subprocess.run([sys.executable, "-m", "tracer", "show", "--json", *[str(tmp_path / f) for f in files]],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout.strip(), shown.stderr
