"""Output survives a signal arriving in the middle of a large write to a
full pipe (Python's buffered stdout can lose the rest of such a write)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

CHILD = r"""
import signal, sys, time
from tracer.output import write_out
encoded = sys.argv[1] == "bytes"  # the --json block: already UTF-8
stop = []
signal.signal(signal.SIGINT, lambda *a: stop.append(1))
n = 0
while not stop:
    text = "".join(f'{{"n": {n + i}, "pad": "{"x" * 3000}"}}\n' for i in range(20))
    write_out(memoryview(text.encode()) if encoded else text)
    n += 20
    time.sleep(0.01)
sys.stderr.write(f"{n}\n")
"""


@pytest.mark.parametrize("kind", ["text", "bytes"])
def test_nothing_lost_when_a_signal_interrupts_a_blocked_write(kind):
    # The parent reads nothing until after the signal: the pipe is full and
    # the child is blocked in a write when SIGINT arrives.
    for _ in range(3):
        child = subprocess.Popen([sys.executable, "-c", CHILD, kind], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
        lines = out.splitlines()
        assert [json.loads(line)["n"] for line in lines] == list(range(int(err)))


def test_a_large_block_is_written_in_pieces_of_at_most_write_piece(tmp_path, monkeypatch):
    # A block of several MiB reaches the file byte for byte, in write() calls
    # none larger than WRITE_PIECE (a whole 2 MiB aligned stretch in one write
    # costs this VM's page cache ~8x: tracer/output.py).
    import os

    from tracer import output

    sizes = []
    real_write = os.write

    def counting_write(fd, data):
        sizes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(output.os, "write", counting_write)
    block = b"".join(b'{"n": %d, "pad": "%s"}\n' % (i, b"y" * (i % 700)) for i in range(20_000))
    assert len(block) > 4 * output.WRITE_PIECE
    path = tmp_path / "out.json"
    with open(path, "w") as f:
        output.write_out(memoryview(block), f)
        output.write_out("tail é\n", f)
    assert path.read_bytes() == block + "tail é\n".encode()
    assert output.WRITE_PIECE <= 1 << 20
    assert max(sizes) <= output.WRITE_PIECE
    assert len(sizes) >= len(block) // output.WRITE_PIECE + 1
