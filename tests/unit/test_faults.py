"""Faults without root: write errors, output files' modes, closed pipes,
signals while starting, NaN/inf/huge numbers, too many filter values,
control characters in names."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.unit.test_capture import META, table_of
from tracer.capture import CaptureWriteError
from tracer.capture.reader import read_capture
from tracer.capture.writer import CaptureWriter
from tracer.cli import cli
from tracer.errors import TracerError
from tracer.kernel.kernel_filter import MAX_FILTER_HOSTS
from tracer.outfiles import create_fd, file_mode, open_output
from tracer.output import Reader
from tracer.stopping import StopSignals, stop_signals
from tracer.targets import Targets
from tracer.text import printable

REPO = Path(__file__).resolve().parents[2]


# --- write errors ------------------------------------------------------------------


def test_dev_full_is_one_error_and_close_raises_nothing_more():
    before = os.stat("/dev/full").st_mode
    w = CaptureWriter("/dev/full", META)
    w.add_events(table_of(50))
    with pytest.raises(CaptureWriteError, match="No space left on device") as info:
        w.flush()
    assert info.value.__cause__ is None and info.value.__suppress_context__  # one line, not chained
    w.close()  # nothing more: no second traceback from close()
    w.close()
    assert w.closed
    with pytest.raises(CaptureWriteError, match="closed"):
        w.add_events(table_of(5))
    assert os.stat("/dev/full").st_mode == before  # a device's own mode is never changed


_FILL_UNTIL_EFBIG = r"""
import os, resource, signal, sys
sys.path.insert(0, {repo!r})
from tests.unit.test_capture import META, table_of
from tracer.capture import CaptureWriteError
from tracer.capture.writer import CaptureWriter
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as a full disk does with ENOSPC
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
w = CaptureWriter({path!r}, META)
try:
    for i in range(200):
        w.add_events(table_of(300, first_id=1 + i * 300, t0=10**10 + i * 10**8))
        w.flush()
    print("never full")
except CaptureWriteError as exc:
    w.close()
    print("ERROR", exc)
"""


def test_a_full_file_keeps_its_whole_batches_and_reads_back_partial(tmp_path):
    """A file that cannot grow (RLIMIT_FSIZE: EFBIG, the same path as ENOSPC)
    is cut back to its last whole batch; the reader says it recovered them."""
    path = tmp_path / "cap.arrows"
    script = _FILL_UNTIL_EFBIG.format(repo=str(REPO), limit=60_000, path=str(path))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and out.stdout.startswith("ERROR"), out
    assert "the capture keeps the" in out.stdout and "\n" not in out.stdout.strip()
    cap = read_capture(path)
    assert cap.table.num_rows > 0 and cap.table.num_rows % 300 == 0  # whole batches only
    assert len(cap.recovered) == 1 and "not stopped cleanly" in cap.recovered[0]
    assert path.stat().st_size <= 60_000


# --- modes of output files ------------------------------------------------------------


def test_outputs_are_0600_whatever_the_umask(tmp_path, monkeypatch):
    monkeypatch.delenv("TRACER_FILE_MODE", raising=False)
    old = os.umask(0)
    try:
        with open_output(tmp_path / "r.html", text=True) as f:
            f.write("x")
        existing = tmp_path / "old.pcapng"
        existing.write_bytes(b"")
        existing.chmod(0o666)
        os.close(create_fd(existing))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.html").stat().st_mode) == 0o600
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600


def test_file_mode_asked_for_and_bad_values(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACER_FILE_MODE", "0640")
    assert file_mode() == 0o640
    os.close(create_fd(tmp_path / "a"))
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o640
    for bad in ("rw", "999", "-1", "0o1000"):
        monkeypatch.setenv("TRACER_FILE_MODE", bad)
        with pytest.raises(TracerError, match="TRACER_FILE_MODE"):
            file_mode()


def test_never_writes_through_a_symlink(tmp_path):
    target = tmp_path / "target"
    target.write_text("keep")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(OSError):
        create_fd(tmp_path / "link")
    assert target.read_text() == "keep"


def test_report_and_export_files_are_0600(tmp_path, monkeypatch):
    from tests.unit.test_capture import write

    monkeypatch.delenv("TRACER_FILE_MODE", raising=False)
    cap = tmp_path / "c.arrows"
    write(cap, [table_of(20)])
    old = os.umask(0)
    try:
        runner = CliRunner()
        r1 = runner.invoke(cli, ["report", str(cap), "-o", str(tmp_path / "r.html")])
        r2 = runner.invoke(cli, ["export", "--pcapng", str(tmp_path / "e.pcapng"), str(cap)])
    finally:
        os.umask(old)
    assert r1.exit_code == 0 and r2.exit_code == 0, (r1.output, r2.output)
    assert stat.S_IMODE((tmp_path / "r.html").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "e.pcapng").stat().st_mode) == 0o600


# --- closed pipes ------------------------------------------------------------------------


def test_reader_gone_is_noticed_by_polling_and_by_writing():
    r, w = os.pipe()
    with os.fdopen(w, "w") as stream:
        reader = Reader(stream)
        assert not reader.check()
        assert reader.write("one\n")
        os.close(r)
        saved = os.dup(1)  # quiet_stdout points fd 1 at /dev/null: keep pytest's
        try:
            previous = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
            try:
                assert reader.check()  # POLLERR, before any write
            finally:
                signal.signal(signal.SIGPIPE, previous)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        assert not reader.write("two\n")


def test_show_into_a_closed_pipe_exits_0_without_a_traceback(tmp_path):
    from tests.unit.test_capture import write

    cap = tmp_path / "c.arrows"
    write(cap, [table_of(3000)])
    show = subprocess.Popen([sys.executable, "-m", "tracer", "show", "--json", str(cap)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = show.stdout.readline()
    show.stdout.close()
    err = show.stderr.read().decode()
    assert show.wait(30) == 0, err
    assert first.startswith(b"{") and "Traceback" not in err and "Exception ignored" not in err


# --- signals while starting ------------------------------------------------------------------


@pytest.fixture
def sighup():
    """Sets SIGHUP's disposition for a test (these tests may run under nohup,
    SIGHUP ignored, or not), and puts back the runner's afterwards."""
    before = signal.getsignal(signal.SIGHUP)
    yield lambda disposition: signal.signal(signal.SIGHUP, disposition)
    signal.signal(signal.SIGHUP, before)


def test_a_signal_while_starting_stops_the_start_even_if_its_interrupt_was_swallowed(sighup):
    sighup(signal.SIG_DFL)
    stop = StopSignals()
    try:
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            signal.sigtimedwait([], 0)  # let the handler run
        except KeyboardInterrupt:
            pass  # e.g. swallowed by a library's finaliser
        assert stop.requested and stop.signal == signal.SIGHUP
        with pytest.raises(KeyboardInterrupt):
            stop.running()
    finally:
        stop.restore()


def test_sighup_and_sigpipe_stop_a_running_loop_like_sigterm(sighup):
    sighup(signal.SIG_DFL)
    # what the handlers were before: restored as they were
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGHUP, signal.SIGPIPE, signal.SIGTERM)}
    for sig in (signal.SIGHUP, signal.SIGPIPE, signal.SIGTERM):
        stop = StopSignals()
        try:
            stop.running()
            os.kill(os.getpid(), sig)
            signal.sigtimedwait([], 0)
            assert stop.requested and stop.signal == sig
        finally:
            stop.restore()
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_an_ignored_sighup_stays_ignored_as_under_nohup(sighup):
    """`nohup tracer record -w f &`: the terminal closing does not stop it;
    SIGTERM still does, and SIGHUP is ignored again afterwards."""
    sighup(signal.SIG_IGN)
    stop = StopSignals()
    try:
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN  # while starting
        stop.running()
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN  # and while running
        os.kill(os.getpid(), signal.SIGHUP)
        signal.sigtimedwait([], 0)
        assert not stop.requested and stop.signal is None
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0)
        assert stop.requested and stop.signal == signal.SIGTERM
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN


def test_an_inherited_ignored_sigint_still_stops_it():
    """A script's `tracer record -w f &` starts with SIGINT ignored (a shell
    without job control does that to background commands): a SIGINT sent
    to it still stops it cleanly; the ignored disposition is put back."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert signal.SIGINT in stop_signals()
        stop = StopSignals()
        try:
            stop.running()
            os.kill(os.getpid(), signal.SIGINT)
            signal.sigtimedwait([], 0)
            assert stop.requested and stop.signal == signal.SIGINT
        finally:
            stop.restore()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


_STUCK_AFTER_STOP = r"""
import os, signal, sys, threading, time
sys.path.insert(0, {repo!r})
from tracer.stopping import StopSignals, stop_signals
stop = StopSignals()
stop.running()
os.kill(os.getpid(), signal.SIGTERM)
while not stop.requested:
    time.sleep(0.01)
threading.Event().wait()  # stuck for good while stopping (a call that never returns)
"""


@pytest.mark.parametrize("how", ["signal", "ended by itself"])
def test_a_stop_that_gets_stuck_ends_the_process_and_says_where(how):
    """Told to stop (or ended by its count/duration) and then stuck: after the
    grace period it says so in one line, shows where each thread was, exits 1."""
    script = _STUCK_AFTER_STOP.format(repo=str(REPO))
    if how == "ended by itself":
        script = script.replace("os.kill(os.getpid(), signal.SIGTERM)\nwhile not stop.requested:\n    time.sleep(0.01)\n",
                                "stop.finishing()\n")
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "TRACER_STOP_GRACE_S": "1.5"})
    took = time.monotonic() - started
    assert out.returncode == 1, out
    assert 1.5 <= took < 15, took
    first = out.stderr.splitlines()[0]
    assert first == "tracer: error: still not stopped 1.5 s after being asked to; giving up " \
                    "(please report: where each thread was follows)", out.stderr
    assert "Current thread" in out.stderr or "Thread 0x" in out.stderr, out.stderr
    assert "wait" in out.stderr  # the stuck call is named


def test_a_stop_that_ends_in_time_is_not_cut_short():
    script = _STUCK_AFTER_STOP.format(repo=str(REPO)).replace(
        "threading.Event().wait()", "stop.restore()\ntime.sleep(3)\nprint('still here')")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "TRACER_STOP_GRACE_S": "1"})
    assert out.returncode == 0 and out.stdout == "still here\n" and out.stderr == "", out


def test_time_blocked_on_a_slow_reader_is_not_a_stuck_stop():
    """`trace -d 10 | less`: the last journeys wait on a reader who reads
    slowly; the watchdog counts only time not spent writing to it."""
    script = _STUCK_AFTER_STOP.format(repo=str(REPO)).replace(
        "threading.Event().wait()",
        "from tracer import output\noutput.pipe_writing = True\ntime.sleep(3)\noutput.pipe_writing = False\n"
        "stop.restore()\nprint('still here')")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "TRACER_STOP_GRACE_S": "1"})
    assert out.returncode == 0 and out.stdout == "still here\n" and out.stderr == "", out


_TAKE_UNDER_A_SLOW_SIGNAL = r"""
import signal, sys, time
import numpy as np
sys.path.insert(0, {repo!r})
from tracer.drain import BackgroundDrain

class QuietRing:  # a ring buffer nothing is written to
    record_size = 64
    sample = np.dtype([("x", "u8")])
    def pending_bytes(self):
        return 0
    def wait(self, timeout):
        time.sleep(timeout)
        return False

d = BackgroundDrain(QuietRing())
# A signal whose handling outlasts the wait's deadline (a loaded machine
# hands the GIL back late): the wait must still end.
signal.signal(signal.SIGALRM, lambda *a: time.sleep(0.3))
signal.setitimer(signal.ITIMER_REAL, 0.05)
got = d.take(0.1)
d.stop()
print("returned", len(got))
"""


def test_the_main_loops_wait_for_records_ends_when_a_signal_outlasts_it():
    """The CI hang of a stopped trace: the main thread waits for the drain
    thread's records with a timeout; a stop signal handled past that
    timeout made CPython 3.11's SimpleQueue wait forever."""
    out = subprocess.run([sys.executable, "-c", _TAKE_UNDER_A_SLOW_SIGNAL.format(repo=str(REPO))],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout == "returned 0\n", out


# --- numbers --------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["trace", "--duration", "nan"], ["trace", "--duration", "inf"], ["trace", "--duration", "-1"],
    ["record", "-w", "x.arrows", "--rotate-seconds", "nan"], ["record", "-w", "x.arrows", "--duration", "1e300"],
    ["latency", "--interval", "nan"], ["latency", "--interval", "inf"], ["latency", "--interval", "0.01"],
    ["trace", "--sample", "99999999999999999999"], ["trace", "--sample", "0"],
])
def test_unusable_numbers_are_one_line_before_any_kernel_work(args):
    out = subprocess.run([sys.executable, "-m", "tracer", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tracer: error: Invalid value for"), out.stderr


def test_largest_sample_fits_the_kernel_hash():
    f = Targets(sample=(1 << 32) - 1).kernel_filter()
    assert f"-DSAMPLE_N={(1 << 32) - 1}u" in f.cflags()
    with pytest.raises(TracerError, match="--sample"):
        Targets(sample=1 << 32)


# --- filter sizes -------------------------------------------------------------------------


def test_filter_maps_are_sized_to_what_was_asked():
    ports = tuple(range(1000, 1500))
    hosts = tuple(f"10.{i >> 8}.{i & 255}.1" for i in range(3000))
    flags = Targets(ports=ports, hosts=hosts).kernel_filter().cflags()
    assert "-DFILTER_PORT_ENTRIES=500" in flags and "-DFILTER_HOST_ENTRIES=3000" in flags
    assert "-DFILTER_PORT_ENTRIES=64" in Targets(ports=(1, 2)).kernel_filter().cflags()


def test_too_many_hosts_is_one_line_naming_the_limit():
    hosts = tuple(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(MAX_FILTER_HOSTS + 1))
    with pytest.raises(TracerError, match=f"at most {MAX_FILTER_HOSTS:,}"):
        Targets(hosts=hosts)


# --- names from the system on a terminal ---------------------------------------------------------


def test_printable_escapes_what_steers_a_terminal():
    assert printable("eth0") == "eth0"
    assert printable("ev\x1b[7mil") == "ev\\x1b[7mil"
    assert printable("a\nb\rc\x07\x9b") == "a\\x0ab\\x0dc\\x07\\x9b"
    assert printable("x\u202ey") == "x\\u202ey"
    assert printable("caf\u00e9 \u2192") == "caf\u00e9 \u2192"  # ordinary text stays


def test_human_journeys_escape_names_and_json_keeps_them():
    """Both renderers (render_journey, the definition, and render_rows, the
    fast path) escape interface and container names and drop reasons alike."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from tracer.journey_json import journey_json_block
    from tracer.journey_rows import journey_rows
    from tracer.journeys import build_journeys
    from tracer.render import render_journey
    from tracer.render_rows import render_rows

    table = table_of(2)
    evil_if, evil_ct = "ev\x1b[7mil", "web\x1b]0;pwned\x07"
    table = table.set_column(table.schema.get_field_index("ifname"), "ifname",
                             pa.array([evil_if] * table.num_rows).dictionary_encode())
    names = pc.if_else(pc.is_null(table["container_name"].cast(pa.string())), None, evil_ct)
    table = table.set_column(table.schema.get_field_index("container_name"), "container_name", names.dictionary_encode())
    text = "".join(render_journey(j, False) + "\n" for j in build_journeys(table))
    assert "\x1b" not in text and "\x07" not in text
    assert "ev\\x1b[7mil" in text and "web\\x1b]0;pwned\\x07" in text
    assert bytes(render_rows(journey_rows(table), False)).decode() == text
    block = bytes(journey_json_block(journey_rows(table))[0]).decode()
    assert "\\u001b[7m" in block and "\x1b" not in block


# --- a capture's columns against the one definition -----------------------------------


def _rewritten(src, dst, change):
    """The capture ``src`` rewritten with ``change`` made to its table."""
    import pyarrow as pa

    with pa.ipc.open_stream(src.read_bytes()) as reader:
        table = change(reader.read_all())
    with pa.ipc.new_stream(str(dst), table.schema) as w:
        w.write_table(table)
    return dst


@pytest.mark.parametrize("command", [["show"], ["show", "--json"], ["stats"], ["stats", "--format", "json"]])
def test_a_missing_or_mistyped_column_is_one_line_naming_it(tmp_path, command):
    import pyarrow as pa

    from tests.unit.test_capture import write

    good = tmp_path / "good.arrows"
    write(good, [table_of(30)])
    missing = _rewritten(good, tmp_path / "missing.arrows", lambda t: t.remove_column(t.schema.get_field_index("hook")))

    def retype(t):
        i = t.schema.get_field_index("src_port")
        return t.set_column(i, pa.field("src_port", pa.string()), pa.array(["not a port"] * t.num_rows))

    mistyped = _rewritten(good, tmp_path / "mistyped.arrows", retype)
    for path, name in ((missing, "'hook'"), (mistyped, "'src_port'")):
        r = CliRunner().invoke(cli, [*command, str(path)])
        assert r.exit_code == 2, (path.name, r.output)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tracer: error:") and name in lines[0], r.output
        assert "truncated" not in lines[0]


def test_capture_on_stdout_whose_reader_left_is_not_an_error():
    """`tracer record -w - | head -c 100`: the reader closing the pipe ends
    the capture with CaptureReaderGone (exit status 0), not a write error."""
    from tracer.capture import CaptureReaderGone

    r, w = os.pipe()
    os.close(r)
    saved = os.dup(1)
    previous = signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        os.dup2(w, 1)
        writer = CaptureWriter("-", META)
        writer.add_events(table_of(20))
        with pytest.raises(CaptureReaderGone) as info:
            writer.flush()
        writer.close()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(w)
        signal.signal(signal.SIGPIPE, previous)
    assert info.value.exit_code == 0


def _voluntary_switches(thread) -> int:
    with open(f"/proc/self/task/{thread.native_id}/status") as f:
        return int(next(line for line in f if line.startswith("voluntary_ctxt_switches")).split()[1])


def test_the_stop_watchdog_sleeps_until_a_stop_and_ends_with_restore():
    """While tracing the watchdog does not wake up (it looked at its flags 5
    times a second: a wake-up is ~35 µs of CPU on a VM); a stop wakes it at
    once, and restore() ends it and closes its eventfd."""
    stop = StopSignals()
    try:
        stop.running()
        time.sleep(0.1)  # asleep by now
        before = _voluntary_switches(stop._watchdog)
        time.sleep(1.0)
        assert _voluntary_switches(stop._watchdog) - before <= 1  # 5 when it polled
        stop.finishing()  # the loop ended by itself: the grace period runs from now
        time.sleep(0.1)
        assert _voluntary_switches(stop._watchdog) - before >= 1 and stop._watchdog.is_alive()
    finally:
        fd = stop._wake_fd
        stop.restore()
    assert not stop._watchdog.is_alive() and stop._wake_fd == -1
    with pytest.raises(OSError):
        os.fstat(fd)
    stop.restore()  # twice: nothing more


_INTERRUPT_IN_A_CALLBACK = r"""
import gc, os, signal, sys, weakref
sys.path.insert(0, {repo!r})
from tracer.stopping import StopSignals
stop = StopSignals()
class Thing: pass
def callback(_):
    # the signal's KeyboardInterrupt raised where Python cannot propagate it
    # (as in an import lock's weakref callback)
    os.kill(os.getpid(), signal.SIGTERM)
    signal.sigtimedwait([], 0)
thing = Thing(); ref = weakref.ref(thing, callback); del thing; gc.collect()
class Other: pass
def other(_): raise ValueError("someone else's")
o = Other(); ref2 = weakref.ref(o, other); del o; gc.collect()
hooked = sys.unraisablehook != sys.__unraisablehook__
stop.restore()
print(stop.requested, hooked, sys.unraisablehook == sys.__unraisablehook__)
try:
    stop.running()
except KeyboardInterrupt:
    print("stopped")
"""


def test_a_setup_signal_raised_inside_a_callback_prints_no_traceback_and_still_stops():
    """A signal at any moment of the start (tests/e2e/test_faults.py) may
    land in an import lock's weakref callback, where its KeyboardInterrupt
    cannot propagate: Python printed it as 'Exception ignored ...
    Traceback'. The stop itself is kept (requested), and other code's
    unraisable exceptions are still printed."""
    out = subprocess.run([sys.executable, "-c", _INTERRUPT_IN_A_CALLBACK.format(repo=str(REPO))],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out
    assert out.stdout.split() == ["True", "True", "True", "stopped"], out
    assert "KeyboardInterrupt" not in out.stderr, out.stderr
    assert "someone else's" in out.stderr, out.stderr  # not ours: printed as before
