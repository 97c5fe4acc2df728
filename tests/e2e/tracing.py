"""Helpers for live tracing tests: run the real `tracer trace` CLI as a
subprocess, wait until its programs are attached, drive lab traffic, collect
the JSON journeys, and check that nothing of ours stays in the kernel."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from tracer.kernel.bpf_syscall import list_links, list_progs

REPO = Path(__file__).resolve().parents[2]
OUR_PROG_PREFIX = "trc_"


def sighup_default() -> None:
    """preexec_fn for a tracer child: SIGHUP at its default, whether or not
    these tests run under nohup (which would hand the child an ignored
    SIGHUP, and the tracer keeps an ignored SIGHUP ignored)."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


class Tracer:
    """A `tracer trace --json` process (or another command: `command`, and
    json_out=False for one without --json, such as `record`); nohup=True:
    started by the real nohup (SIGHUP ignored), else with SIGHUP at its
    default."""

    def __init__(self, *args: str, env: dict | None = None, command: str = "trace", json_out: bool = True,
                 nohup: bool = False, stdout_file: Path | None = None, argv: list[str] | None = None) -> None:
        """stdout_file: the output goes to this file instead of a pipe, so
        the test's own reading (slow on a loaded machine) never paces the
        tracer's writes. argv: another program in the tracer's place (the
        tests of these helpers)."""
        self.args = [command, *(["--json"] if json_out else []), *args]
        self.json_out = json_out
        self.stdout_file = stdout_file
        out = subprocess.PIPE if stdout_file is None else open(stdout_file, "wb")
        self.proc = subprocess.Popen(
            argv or [*(["nohup"] if nohup else []), sys.executable, "-m", "tracer", *self.args],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            preexec_fn=sighup_default,
        )
        if stdout_file is not None:
            out.close()  # the child has its own
        self.stderr_lines: list[str] = []
        self._readers: list[threading.Thread] = []  # stop_timed's: they read the pipes from then on
        self._read: dict[str, list[str]] = {}

    def wait_ready(self, timeout: float = 30) -> float:
        """Block until the tracer says it is tracing; returns seconds waited."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.stderr_lines.append(line)
            if "Ctrl-C to stop" in line:
                return time.monotonic() - start
        self.proc.kill()
        out, err = self.proc.communicate()
        raise AssertionError(f"tracer never became ready: {''.join(self.stderr_lines)}{err}")

    def wait_for(self, what: str, found, timeout: float = 60) -> dict:
        """The first journey printed so far for which ``found(journey)`` is
        true, waiting for it as long as ``timeout`` (needs stdout_file: the
        tracer writes whole lines to it as it shows them). A test waits for
        what it needs to see, not for a time that a loaded machine exceeds."""
        assert self.stdout_file is not None, "wait_for reads the output file (stdout_file=)"
        deadline = time.monotonic() + timeout
        while True:
            text = self.stdout_file.read_text()
            for line in text[: text.rfind("\n") + 1].splitlines():  # whole lines only
                if line.strip() and found(journey := _json(line)):
                    return journey
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {what} shown within {timeout} s (tracer "
                                     f"{'exited' if self.proc.poll() is not None else 'still running'}):\n{self.stacks()}")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> list[dict]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.finish(timeout)

    def finish(self, timeout: float = 60) -> list[dict]:
        """The process's end: its journeys as JSON (none without --json)."""
        try:
            out, err = self._communicate(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"tracer {' '.join(self.args)} did not end within {timeout} s; "
                                 f"its threads:\n{self.stacks()}") from None
        self.stderr = "".join(self.stderr_lines) + err
        self.returncode = self.proc.returncode
        if "still not stopped" in self.stderr:  # the stop watchdog (tracer/stopping.py) fired: show where it hung
            warnings.warn(f"tracer {' '.join(self.args)}: {self.stderr}")
        if not self.json_out:  # text (or nothing): the test reads stdout_file itself
            return []
        if self.stdout_file is not None:
            out = self.stdout_file.read_text()
        return [_json(line) for line in out.splitlines() if line.strip()]

    def stop_timed(self, sig: int, timeout: float = 90) -> "StopTime":
        """Send ``sig`` and time the stop until the process exits: the wall
        time, and how much of it the tracer's main thread spent runnable but
        waiting for a CPU (/proc schedstat, read once it has exited and
        before it is reaped: exact, no sampling). finish() still to call."""
        pid = self.proc.pid
        waited_before = _cpu_wait_ns(pid)
        self._read_pipes()  # while it stops: its summary and warnings never fill a pipe nobody reads
        sent = time.monotonic()
        self.proc.send_signal(sig)
        deadline = sent + timeout
        while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"tracer {' '.join(self.args)} did not end within {timeout} s; "
                                     f"its threads:\n{self.stacks()}")
            time.sleep(0.005)
        wall = time.monotonic() - sent
        return StopTime(wall, (_cpu_wait_ns(pid) - waited_before) / 1e9)

    def stacks(self) -> str:
        """A stuck tracer's thread stacks (SIGUSR1, tracer/stopping.py), then
        it is killed."""
        self.proc.send_signal(signal.SIGUSR1)
        time.sleep(1)
        self.proc.kill()
        _, err = self._communicate(None)
        return "".join(self.stderr_lines) + err

    def _read_pipes(self) -> None:
        """Read the tracer's pipes (stderr, stdout if not a file) on threads
        from now on, until they end: a test that only waits for the process
        must not leave it blocked writing to a full pipe (~64 KiB)."""
        if self._readers:
            return
        for name in ("stdout", "stderr"):
            pipe = getattr(self.proc, name)
            if pipe is None:
                continue
            chunks = self._read[name] = []
            reader = threading.Thread(target=lambda p=pipe, c=chunks: c.append(p.read()), daemon=True,
                                      name=f"tracer-{name}")
            reader.start()
            self._readers.append(reader)

    def _communicate(self, timeout: float | None) -> tuple[str, str]:
        """(stdout, stderr) once the process has exited: communicate(), or
        what _read_pipes' threads read."""
        if not self._readers:
            out, err = self.proc.communicate(timeout=timeout)
            return out or "", err or ""
        self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return "".join(self._read.get("stdout", [])), "".join(self._read.get("stderr", []))


@dataclass(frozen=True)
class StopTime:
    """Seconds of a stop: wall, and cpu_wait, the part the tracer's main
    thread spent runnable but waiting for a CPU that other processes held."""

    wall: float
    cpu_wait: float

    @property
    def own(self) -> float:
        """The stop's own time: its work, its waits, its threads' turns."""
        return self.wall - self.cpu_wait

    def __str__(self) -> str:
        return f"{self.wall:.1f} s ({self.cpu_wait:.1f} s of it waiting for a CPU, {self.own:.1f} s its own)"


def _cpu_wait_ns(pid: int) -> int:
    """How long the process's main thread has been runnable but waiting for
    a CPU (schedstat's second field; readable until the process is reaped)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[1])


def _json(line: str) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"not a JSON line ({exc}): {line!r}") from None


def our_kernel_objects() -> tuple[list, list]:
    """Programs named like ours and the links that hold them (the kernel's view)."""
    progs = [p for p in list_progs() if p.name.startswith(OUR_PROG_PREFIX)]
    ids = {p.id for p in progs}
    links = [link for link in list_links() if link.prog_id in ids]
    return progs, links


def link_ids_held_by(pid: int) -> set[int]:
    """The BPF links a process holds (its fds' fdinfo): exactly its own,
    whatever other tracers attach meanwhile. Empty for a process gone."""
    return _bpf_ids_held_by(pid)[1]


def _bpf_ids_held_by(pid: int) -> tuple[set[int], set[int]]:
    """(program ids, link ids) a process holds through its fds (fdinfo: a
    program fd says prog_id, a link fd link_id and its prog_id)."""
    progs: set[int] = set()
    links: set[int] = set()
    fdinfo = f"/proc/{pid}/fdinfo"
    try:
        fds = os.listdir(fdinfo)
    except OSError:
        return progs, links
    for fd in fds:
        try:
            with open(f"{fdinfo}/{fd}") as f:
                for line in f:
                    if line.startswith("link_id:"):
                        links.add(int(line.split()[1]))
                    elif line.startswith("prog_id:"):
                        progs.add(int(line.split()[1]))
        except (OSError, ValueError):
            continue
    return progs, links


# held_by_others looks twice this far apart: an id counts only if held both times.
HELD_GAP_S = 0.2


def held_by_others(gap: float = HELD_GAP_S) -> tuple[set[int], set[int]]:
    """(program ids, link ids) held by live processes outside this test
    process and its children: another engineer's tracer on the shared
    machine, started after a test's snapshot. Ours have exited when a test
    checks; a program of ours left behind without an fd (a clsact filter
    holding it) is held by no process, so it still counts. Only ids held in
    two looks `gap` apart count (held_both_times): a process that opens an
    fd to every program for a moment (bpftool, another test's listing)
    would otherwise make a leaked program of ours look like someone else's."""
    first = _held_by_others_now()
    time.sleep(gap)
    return held_both_times(first, _held_by_others_now())


def held_both_times(first: tuple[set[int], set[int]], second: tuple[set[int], set[int]]) -> tuple[set[int], set[int]]:
    """(program ids, link ids) held in both looks: a steady holder's."""
    return first[0] & second[0], first[1] & second[1]


def _held_by_others_now() -> tuple[set[int], set[int]]:
    """(program ids, link ids) that processes outside this test process and
    its children hold at this moment."""
    parents: dict[int, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parents[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    me = os.getpid()

    def ours(pid: int) -> bool:
        for _ in range(64):  # a bounded walk up the tree
            if pid == me:
                return True
            if pid <= 1 or pid not in parents:
                return False
            pid = parents[pid]
        return False

    progs: set[int] = set()
    links: set[int] = set()
    for pid in parents:
        if not ours(pid):
            p, link_ids = _bpf_ids_held_by(pid)
            progs |= p
            links |= link_ids
    return progs, links


def tc_filters_named_tracer() -> list[str]:
    found = []
    for dev in os.listdir("/sys/class/net"):
        for direction in ("ingress", "egress"):
            out = subprocess.run(["tc", "filter", "show", "dev", dev, direction], capture_output=True, text=True).stdout
            if "tracer" in out:
                found.append(f"{dev} {direction}")
    return found


def clsact_devices() -> set[str]:
    """Interfaces of the host netns that have a clsact qdisc."""
    out = subprocess.run(["tc", "qdisc", "show"], capture_output=True, text=True).stdout
    return {line.split(" dev ")[1].split()[0] for line in out.splitlines() if line.startswith("qdisc clsact")}


def kernel_snapshot() -> tuple[set, set]:
    """Ids of our programs and links now (another tracer may be running)."""
    progs, links = our_kernel_objects()
    return {p.id for p in progs}, {link.id for link in links}


def wait_gone(before: tuple[set, set] = (set(), set()), timeout: float = 10) -> tuple[list, list]:
    """Our programs and links that were not there `before` and are still
    attached after `timeout`, apart from those a live process outside this
    test holds (held_by_others: programs share our names whoever loads
    them). Links vanish when their fds close; BCC's programs a moment later.

    Each pass lists the new objects first and looks for their holders after;
    the listing after the holders only drops what was let go meanwhile: an
    object that appears then (another engineer's tracer starting) was never
    a candidate, and its holder was not looked for."""
    deadline = time.monotonic() + timeout
    while True:
        progs, links = our_kernel_objects()
        progs = [p for p in progs if p.id not in before[0]]
        links = [link for link in links if link.id not in before[1]]
        if progs or links:
            others_progs, others_links = held_by_others()
            still_progs, still_links = (set(ids) for ids in kernel_snapshot())  # one let go meanwhile is gone
            progs = [p for p in progs if p.id in still_progs and p.id not in others_progs]
            links = [link for link in links if link.id in still_links and link.id not in others_links]
        if (not progs and not links) or time.monotonic() > deadline:
            return progs, links
        time.sleep(0.2)


def hops(journey: dict) -> list[tuple]:
    return [(h["hook"], h["nat_stage"], h["ifname"]) for h in journey["hops"]]


def index_of(journey: dict, hook: str, nat_stage=None, ifname=None, start: int = 0) -> int:
    for i, h in enumerate(journey["hops"][start:], start):
        if h["hook"] == hook and (nat_stage is None or h["nat_stage"] == nat_stage) and (ifname is None or h["ifname"] == ifname):
            return i
    raise AssertionError(f"no {hook}/{nat_stage}@{ifname} after hop {start} in {hops(journey)}")


def own_source_ports(n: int) -> list[int]:
    """Source ports above the client netns's ephemeral range (1024-65000):
    only this test's connections use them; random, so a rerun does not meet
    the conntrack entries of the last run."""
    return random.sample(range(65001, 65536), n)


def connect_from(lab, sport: int, seconds: float = 2, request: bool = True) -> None:
    """A connection to the published port from a fixed source port (so the
    test knows its packets, and a rule can match them alone): a GET, or just
    the handshake; a dropped SYN just times out."""
    code = ("import socket, sys\n"
            "s = socket.socket()\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "s.bind(('', int(sys.argv[1])))\n"
            "s.settimeout(float(sys.argv[4]))\n"
            "try:\n"
            "    s.connect((sys.argv[2], int(sys.argv[3])))\n"
            "    if sys.argv[5] == '1':\n"
            "        s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
            "        while s.recv(65536):\n"
            "            pass\n"
            "except OSError:\n"
            "    pass\n"
            "s.close()\n")
    subprocess.run(["ip", "netns", "exec", lab["netns"], sys.executable, "-c", code, str(sport), lab["host_address"],
                    str(lab["port"]), str(seconds), "1" if request else "0"], capture_output=True, timeout=seconds + 10)


def burst_from(lab, sports: list[int], seconds: float = 5) -> subprocess.Popen:
    """Connections to the published port from each of ``sports`` at once
    (one process in the lab client's netns, a GET on each): a burst the
    test knows as its own. Returns the running process."""
    code = ("import socket, sys, threading\n"
            "def one(sport):\n"
            "    s = socket.socket()\n"
            "    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "    s.settimeout(float(sys.argv[3]))\n"
            "    try:\n"
            "        s.bind(('', sport))\n"
            "        s.connect((sys.argv[1], int(sys.argv[2])))\n"
            "        s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
            "        while s.recv(65536):\n"
            "            pass\n"
            "    except OSError:\n"
            "        pass\n"
            "    s.close()\n"
            "ts = [threading.Thread(target=one, args=(int(p),)) for p in sys.argv[4:]]\n"
            "for t in ts: t.start()\n"
            "for t in ts: t.join()\n")
    return subprocess.Popen(["ip", "netns", "exec", lab["netns"], sys.executable, "-c", code, lab["host_address"],
                             str(lab["port"]), str(seconds), *map(str, sports)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ours(ports: set[int], addresses) -> bool:
    """Addresses of one hop (src, dst as "a:p" / "[a]:p" texts) use one of a test's ports."""
    return any(a and int(a.rsplit(":", 1)[1]) in ports for a in addresses)


def shown_journeys(tracer: Tracer, ports: set[int]) -> int:
    """How many of a test's journeys a `trace --json` has shown so far (whole lines)."""
    text = tracer.stdout_file.read_text()
    lines = text[: text.rfind("\n") + 1].splitlines()
    return sum(1 for line in lines if line.strip()
               and ours(ports, [a for h in json.loads(line)["hops"] for a in (h["src"], h["dst"])]))


def wait_until_all_shown(tracers: list[Tracer], ports: set[int], timeout: float = 90) -> None:
    """Until the tracers have shown as many of a test's journeys as each
    other, the same at two looks a second apart (the traffic is over: a
    packet in flight or held shows within that). If they never agree, the
    comparison after the stop says how they differ."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        counts = [shown_journeys(t, ports) for t in tracers]
        if counts[0] and len(set(counts)) == 1 and counts == last:
            return
        last = counts
        time.sleep(1.0)
