#!/usr/bin/env python3
"""Time from command start to the first event (issue 3 target: <= 3 s).

While a loop in the lab's client netns keeps making HTTP requests to
198.18.0.1:8000, repeat N times:

* CLI: spawn ``tracer trace --json --port 8000 --count 1`` and measure the
  wall time from spawn to its "tracing ... Ctrl-C" line on stderr (attached)
  and to the first JSON journey on stdout (printed; a journey is printed only
  once its packet has been idle for IDLE_NS, ~150 ms, see tracer/feeds.py);
* in-process: ``TraceSession(TraceOptions(Targets(ports=(8000,))))``: time from the
  ``start()`` call to its return (attached) and to the first non-empty
  ``poll()`` (first event drained and decoded), without Python start-up and
  imports.

Prints the median of each. Run as root with the lab up:
``.venv/bin/python scripts/bench_start.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))  # sibling benchmark helpers

TARGET_S = 3.0


class TrafficLoop:
    """busybox wget in a loop in the client netns, ~20 requests/s."""

    def __init__(self, status: dict) -> None:
        from bench_overhead import netns_cmd

        loop = f"while :; do timeout 5 busybox wget -q -O /dev/null {status['url']}; sleep 0.05; done"
        self.proc = subprocess.Popen(netns_cmd(status, "sh", "-c", loop),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the loop's own process group (new session)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def cli_once(timeout: float = 60) -> tuple[float | None, float | None]:
    """(seconds to the 'tracing' line, seconds to the first journey line)."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "tracer", "trace", "--json", "--port", "8000", "--count", "1"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    ready = first = None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "out")
    sel.register(proc.stderr, selectors.EVENT_READ, "err")
    buf = {"out": b"", "err": b""}
    try:
        while first is None and time.monotonic() - t0 < timeout:
            for key, _ in sel.select(0.5):
                chunk = os.read(key.fileobj.fileno(), 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf[key.data] += chunk
                now = time.monotonic() - t0
                if key.data == "err" and ready is None and b"Ctrl-C" in buf["err"]:
                    ready = now
                if key.data == "out" and first is None and b"\n" in buf["out"]:
                    first = now
            if not sel.get_map():
                break
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        sel.close()
    if first is None:
        print(f"  (no journey: exit {proc.returncode}: {buf['err'].decode(errors='replace').strip()[-300:]})", file=sys.stderr)
    return ready, first


def in_process_once(timeout: float = 30) -> tuple[float, float | None]:
    from tracer.session import TraceOptions, TraceSession
    from tracer.targets import Targets

    t0 = time.monotonic()
    session = TraceSession(TraceOptions(Targets(ports=(8000,))))
    session.start()
    try:
        ready = time.monotonic() - t0
        while time.monotonic() - t0 < timeout:
            if session.poll(0.05).num_rows:
                return ready, time.monotonic() - t0
        return ready, None
    finally:
        session.close()


def med(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    return f"{statistics.median(got):5.2f} s" if got else "  n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="one repetition (smoke test)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_start: needs root (BPF, netns)", file=sys.stderr)
        return 2
    if args.quick:
        args.repeat = 1
    from bench_overhead import lab_status

    status = lab_status()
    print(f"bench_start: {args.repeat} repetitions while the client netns requests {status['url']} ~20/s", flush=True)
    traffic = TrafficLoop(status)
    cli_ready, cli_first, ip_ready, ip_first = [], [], [], []
    try:
        time.sleep(0.5)
        for i in range(args.repeat):
            r, f = cli_once()
            cli_ready.append(r)
            cli_first.append(f)
            r2, f2 = in_process_once()
            ip_ready.append(r2)
            ip_first.append(f2)
            fmt = lambda v: f"{v:.2f}s" if v is not None else "n/a"  # noqa: E731
            print(f"  run {i + 1}: CLI attached {fmt(r)}, first journey printed {fmt(f)}; "
                  f"in-process attached {fmt(r2)}, first event drained {fmt(f2)}", flush=True)
    finally:
        traffic.stop()
    print()
    print(f"time to first event, medians of {args.repeat}")
    print(f"  CLI: spawn -> 'tracing ... Ctrl-C' (attached)        {med(cli_ready)}")
    print(f"  CLI: spawn -> first journey printed (--json)        {med(cli_first)}")
    print(f"  in-process: start() -> attached                      {med(ip_ready)}")
    print(f"  in-process: start() -> first event drained           {med(ip_first)}")
    got = [v for v in cli_first if v is not None]
    ok = bool(got) and statistics.median(got) <= TARGET_S
    print(f"  target: command start -> first event <= {TARGET_S:.0f} s: {'met' if ok else 'NOT met'} (CLI, first journey printed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
