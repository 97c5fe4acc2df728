"""Faults on the real kernel (issue 12): a disk that fills up under `record`,
`trace -w` and `latency -w`; SIGHUP, SIGPIPE and a reader closing the pipe;
signals at any moment of the start; many filter values; control characters
in an interface name. Each ends with one line (or a clean stop), nothing
attached, and a capture that reads back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.tracing import REPO, Tracer, kernel_snapshot, wait_gone
from tracer import traffic
from tracer.capture import read_capture


def _nothing_left(before) -> None:
    """None of the links that appeared since ``before`` remain, apart from
    those a live process holds (another engineer's tracer started meanwhile:
    ours have all exited by now)."""
    progs, links = wait_gone(before)
    held = _links_held_by_live_processes()
    left = [link for link in links if link.id not in held]
    assert not left, left


def _links_held_by_live_processes() -> set[int]:
    held = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fdinfo"):
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    for line in f:
                        if line.startswith("link_id:"):
                            held.add(int(line.split()[1]))
        except OSError:
            continue
    return held


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("tracer: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A tmpfs of 192 KiB of our own, unmounted afterwards."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k,mode=0700", "trc12-full", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


class _Bursts:
    """HTTP requests from the lab's client in bursts a second apart, so a
    capture gets several batches, until stopped."""

    def __init__(self, lab, per_burst: int = 25) -> None:
        self.lab, self.per_burst = lab, per_burst
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for _ in range(self.per_burst):
                try:
                    traffic.client_http_get(self.lab)
                except Exception:
                    pass
            self.stop.wait(1.0)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


@pytest.mark.parametrize("command", ["record", "trace"])
def test_disk_full_is_one_line_and_the_capture_keeps_what_was_flushed(lab, small_tmpfs, command):
    before = kernel_snapshot()
    path = small_tmpfs / "cap.arrows"
    args = ["--port", str(lab["port"]), "-w", str(path), "--duration", "60"] + (["--quiet"] if command == "record" else [])
    t = Tracer(*args, command=command, json_out=command == "trace")
    t.wait_ready()
    bursts = _Bursts(lab)
    try:
        t.finish(timeout=90)
    finally:
        bursts.close()
    assert t.returncode == 2, t.stderr
    line = _one_error_line(t.stderr)
    assert "No space left on device" in line and str(path) in line, line
    _nothing_left(before)
    if "nothing of it could be written" in line:
        pytest.fail(f"the first batch did not fit: make the bursts smaller ({line})")
    cap = read_capture(path)  # the whole batches written before the disk filled
    assert cap.events.num_rows > 0
    assert cap.recovered and "not stopped cleanly" in cap.recovered[0], cap.recovered
    assert cap.stats is None


def test_latency_capture_on_a_full_disk_is_one_line(lab, small_tmpfs):
    before = kernel_snapshot()
    filler = small_tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # leave the capture no room at all
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    t = Tracer("--port", str(lab["port"]), "-w", str(small_tmpfs / "lat.arrows"), "--interval", "0.2",
               "--duration", "30", "--json", command="latency", json_out=False)
    t.finish(timeout=60)
    assert t.returncode == 2, t.stderr
    assert "No space left on device" in _one_error_line(t.stderr)
    _nothing_left(before)


def test_dev_full_is_one_line(lab):
    before = kernel_snapshot()
    mode = os.stat("/dev/full").st_mode
    t = Tracer("--port", str(lab["port"]), "-w", "/dev/full", "--duration", "2", command="record", json_out=False)
    t.finish(timeout=60)
    assert t.returncode == 2
    assert "/dev/full: No space left on device" in _one_error_line(t.stderr)
    assert os.stat("/dev/full").st_mode == mode
    _nothing_left(before)


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGPIPE, signal.SIGTERM])
def test_sighup_and_sigpipe_stop_like_sigterm(lab, tmp_path, sig):
    before = kernel_snapshot()
    path = tmp_path / "cap.arrows"
    t = Tracer("--port", str(lab["port"]), "-w", str(path))
    t.wait_ready()
    traffic.client_http_get(lab)
    time.sleep(0.5)
    journeys = t.stop(sig)
    assert t.returncode == 0, t.stderr
    assert journeys and "summary" in t.stderr and "Traceback" not in t.stderr
    cap = read_capture(path)
    assert cap.recovered == []  # the end-of-stream marker is there
    assert cap.stats is not None and cap.stats["packets"] >= len(journeys)
    _nothing_left(before)


def test_reader_closing_the_pipe_stops_trace_cleanly(lab, tmp_path):
    """`tracer trace --json -w cap | head -1`: exit 0, the capture finished
    with its statistics row, and without waiting for another journey."""
    before = kernel_snapshot()
    path = tmp_path / "cap.arrows"
    proc = subprocess.Popen([sys.executable, "-m", "tracer", "trace", "--json", "--port", str(lab["port"]), "-w", str(path)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = proc.stderr.readline()
    assert "Ctrl-C to stop" in ready, ready + proc.stderr.read()
    traffic.client_http_get(lab)
    first = proc.stdout.readline()
    assert first.startswith("{")
    proc.stdout.close()  # what `head -1` does after its line
    rc = proc.wait(timeout=20)
    err = proc.stderr.read()
    assert rc == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err
    cap = read_capture(path)
    assert cap.recovered == [] and cap.stats is not None
    _nothing_left(before)


def test_latency_reader_closing_the_pipe_exits_0(lab):
    proc = subprocess.Popen([sys.executable, "-m", "tracer", "latency", "--json", "--interval", "0.2", "--port", str(lab["port"])],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("{")
    proc.stdout.close()
    assert proc.wait(timeout=20) == 0
    assert "Traceback" not in proc.stderr.read()


def test_a_signal_at_any_moment_of_the_start_stops_it(lab):
    """SIGTERM (and SIGHUP) at many points of the start: compile, Docker,
    attach, the first pass. Every run ends promptly with nothing attached."""
    before = kernel_snapshot()
    probe = Tracer("--port", str(lab["port"]))
    ready_s = probe.wait_ready()
    probe.stop(signal.SIGTERM)
    delays = [0.2, 0.5] + [ready_s * f for f in (0.3, 0.5, 0.7, 0.85, 0.95, 1.0, 1.05, 1.2)]
    for i, delay in enumerate(delays):
        sig = signal.SIGHUP if i % 3 == 2 else signal.SIGTERM
        proc = subprocess.Popen([sys.executable, "-m", "tracer", "trace", "--json", "--port", str(lab["port"])],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(sig)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"{signal.Signals(sig).name} {delay:.2f}s after start was ignored: still tracing")
        err = proc.stderr.read()
        assert "Traceback" not in err, err
        assert rc in (0, 130, -sig), (delay, rc, err)
    _nothing_left(before)


def test_many_filter_values(lab):
    """100 ports and 300 hosts (the maps were 64 and 256): traced as asked."""
    ports = [str(p) for p in range(20000, 20099)] + [str(lab["port"])]
    hosts = [f"10.12.{i // 250}.{i % 250 + 1}" for i in range(299)] + [lab["client_address"]]
    args = [a for p in ports for a in ("--port", p)] + [a for h in hosts for a in ("--host", h)]
    t = Tracer(*args)
    t.wait_ready()
    traffic.client_http_get(lab)
    time.sleep(0.5)
    journeys = t.stop()
    assert t.returncode == 0, t.stderr
    assert any(j["protocol"] == "tcp" and j["tcp_flags"] == "S" for j in journeys), t.stderr


NS = "trc12-ns"
EVIL = "t12\x1b[7mh"  # ESC [ 7 m: reverse video, were it written raw


@pytest.fixture
def evil_interface():
    """A veth pair of our own: host side named with an escape sequence,
    198.18.12.1/30; the other end in netns trc12-ns as 198.18.12.2."""
    def ip(*args, check=True):
        return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)

    ip("netns", "del", NS, check=False)
    ip("link", "del", EVIL, check=False)
    ip("netns", "add", NS)
    try:
        ip("link", "add", EVIL, "type", "veth", "peer", "name", "t12c", "netns", NS)
        ip("addr", "add", "198.18.12.1/30", "dev", EVIL)
        ip("link", "set", EVIL, "up")
        ip("-n", NS, "addr", "add", "198.18.12.2/30", "dev", "t12c")
        ip("-n", NS, "link", "set", "t12c", "up")
        ip("-n", NS, "link", "set", "lo", "up")
        yield "198.18.12.1", "198.18.12.2"
    finally:
        ip("link", "del", EVIL, check=False)
        ip("netns", "del", NS, check=False)


def test_control_characters_in_an_interface_name_are_escaped(evil_interface):
    host_ip, ns_ip = evil_interface
    t = Tracer("--host", ns_ip, "--proto", "icmp", "--no-color", json_out=False)
    t.wait_ready()
    subprocess.run(["ip", "netns", "exec", NS, "busybox", "ping", "-c", "2", "-W", "1", host_ip], capture_output=True)
    time.sleep(0.5)
    t.proc.send_signal(signal.SIGINT)
    out, err = t.proc.communicate(timeout=30)
    assert t.proc.returncode == 0, err
    assert "\x1b" not in out and "\x1b" not in err
    assert "t12\\x1b[7mh" in out, out  # shown, escaped
    t2 = Tracer("--host", ns_ip, "--proto", "icmp")  # JSON keeps the real name
    t2.wait_ready()
    subprocess.run(["ip", "netns", "exec", NS, "busybox", "ping", "-c", "1", "-W", "1", host_ip], capture_output=True)
    time.sleep(0.5)
    journeys = t2.stop()
    assert any(h["ifname"] == EVIL for j in journeys for h in j["hops"]), journeys
