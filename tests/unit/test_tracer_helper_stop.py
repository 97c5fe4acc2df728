"""tests/e2e/tracing.Tracer.stop_timed reads the process's stderr while it
waits for the process to end: a stop that writes more than a pipe holds
(~64 KiB: a long summary, many warnings) must not block the process in
write(2) and show as a stop that never ended. No root: the process is a
small Python program in the tracer's place."""

from __future__ import annotations

import signal
import sys

from tests.e2e.tracing import Tracer

# Says it is ready, then on SIGTERM writes 256 KiB to stderr and a line to stdout, and exits.
_LOUD_STOP = r"""
import signal, sys
def stop(*_):
    sys.stderr.write(("x" * 1023 + "\n") * 256)
    sys.stderr.flush()
    print('{"done": true}', flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
sys.stderr.write("Ctrl-C to stop\n")
sys.stderr.flush()
signal.pause()
"""


def test_a_stop_that_writes_more_than_a_pipe_holds_ends(tmp_path):
    t = Tracer(stdout_file=tmp_path / "out.json", argv=[sys.executable, "-c", _LOUD_STOP])
    t.wait_ready(timeout=30)
    took = t.stop_timed(signal.SIGTERM, timeout=20)  # was: blocked writing stderr, "did not end within 20 s"
    assert took.wall < 20
    assert t.finish(timeout=10) == [{"done": True}]
    assert t.returncode == 0
    assert t.stderr.count("x" * 1023 + "\n") == 256


def test_a_stop_with_the_output_on_a_pipe_ends_too():
    t = Tracer(argv=[sys.executable, "-c", _LOUD_STOP])
    t.wait_ready(timeout=30)
    t.stop_timed(signal.SIGTERM, timeout=20)
    assert t.finish(timeout=10) == [{"done": True}]
    assert t.stderr.count("x" * 1023 + "\n") == 256
