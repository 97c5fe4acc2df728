#!/usr/bin/env python3
"""Drain rate from kernel to Arrow on one core (issue 4, Performance).

A synthetic in-kernel event generator feeds the real ring buffer: the real tc
program (``trc_tc_in``, compiled by ``Program([TcSensor([])], Filter(), sightings=True)`` so
every packet matches) is run with ``BPF_PROG_TEST_RUN`` and ``repeat=K`` on a
crafted Ethernet + IPv4 + TCP packet, in a producer process pinned to CPU 1.
Each run is one full pass of the sensor: header parsing, the flows and packets
LRU maps, one 88-byte ``struct event`` into the ring buffer.

The consumer (this process, pinned to CPU 0) drains and decodes into Arrow
tables in the same run, alternating rounds between

* ours:     ``RingBufferDrain.read()`` + ``decode.decode()`` (mmap, numpy, batch)
* baseline: BCC's per-record Python callback (``open_ring_buffer(cb)`` +
            ``ring_buffer_poll()``), the callback copying each record
            (``ctypes.string_at``) into a list; every 65,536 records (and at the
            end) the list becomes one numpy array and goes through the same
            ``decode.decode()``. That is the cheapest honest per-record
            callback, so the ratio is a conservative one.

Figures:

* events/s wall: events decoded into Arrow / wall time from the producer's
  start until the ring is empty again (capped by the producer's own rate when
  the consumer keeps up);
* events/s per consumer CPU second: the consumer's capacity on one core;
* lost: the kernel's own counter (``counters[2*SENSOR_TC+1]``), a delta per run;
* burst: the producer fills the ring while the consumer sleeps, then the
  consumer drains it flat out (large batches), repeated;
* a throttled sweep (producer rate capped with batches + sleeps) showing the
  rates at which ours loses nothing; then (``--what-if``, on by default) the
  same sweep with one change to the drain, made here and not in tracer/: the
  consumer position is stored with one aligned 8-byte write (a numpy uint64
  view of the consumer page) instead of ``struct.pack_into``, which zero-fills
  the 8 bytes before writing them: a producer that reads the position in that
  window sees consumer_pos == 0, i.e. a full ring, and drops its event.

``--minutes M`` then runs ours at ``--memory-rate`` for M minutes and prints
the peak RSS (``resource.getrusage``) and the RSS over time; with
``--capture`` the decoded tables also go through the real ``CaptureWriter``
(zstd Arrow IPC, rotated every 256 MB into a temporary directory, rotated parts
deleted as they close), i.e. a capture as ``tracer record`` writes it.

Run as root from the repo: ``.venv/bin/python scripts/bench_drain.py``
(``--quick`` for a few-second smoke run).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import multiprocessing as mp
import os
import resource
import statistics
import struct
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from tracer import events  # noqa: E402
from tracer.decode import DecodeContext, decode  # noqa: E402
from tracer.inventory import host_interfaces_without_docker  # noqa: E402
from tracer.places import PlaceBook  # noqa: E402
from tracer import drain as drain_module  # noqa: E402
from tracer.drain import RingBufferDrain  # noqa: E402
from tracer.kernel import bpf_syscall  # noqa: E402
from tracer.kernel.kernel_filter import Filter  # noqa: E402
from tracer.kernel.program import RINGBUF_PAGES, Program  # noqa: E402
from tracer.sensors.tc import TcSensor  # noqa: E402

SENSOR_TC = events.SENSORS.index("tc")
PRODUCER_CPU = 1
CONSUMER_CPU = 0
BASELINE_CHUNK = 65536
RING_RECORDS = RINGBUF_PAGES * 4096 // (events.EVENT_SIZE + 8)


# --- the synthetic generator --------------------------------------------------

def packets(variants: int = 8) -> list[bytes]:
    """Ethernet + IPv4 + TCP (+20 bytes payload): client -> host:8000, with
    different source ports, IP ids and sequence numbers per variant."""
    out = []
    for v in range(variants):
        eth = b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02" + b"\x08\x00"
        payload = b"GET / HTTP/1.0\r\n\r\n\0\0"
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 0x1000 + v, 0x4000, 64, 6, 0,
                         bytes([198, 18, 0, 2]), bytes([198, 18, 0, 1]))
        tcp = struct.pack("!HHIIBBHHH", 40000 + v, 8000, 1000 + 7919 * v, 2000, 5 << 4, 0x18, 65535, 0, 0)
        out.append(eth + ip + tcp + payload)
    return out


def _pin(cpu: int) -> bool:
    try:
        os.sched_setaffinity(0, {cpu})
        return True
    except OSError:
        return False


def _producer(prog_fd: int, total: int, batch: int, rate: float | None, cpu: int, conn) -> None:
    """Child process: run the program ``total`` times in batches of ``batch``,
    at most ``rate`` runs/s if given. Sends (runs, seconds) back."""
    _pin(cpu)
    runners = [bpf_syscall.ProgTestRun(prog_fd, p) for p in packets()]
    conn.recv()  # go
    sent, i = 0, 0
    t0 = time.perf_counter()
    while sent < total:
        k = min(batch, total - sent)
        runners[i % len(runners)].run(k)
        i += 1
        sent += k
        if rate:
            ahead = sent / rate - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)
    conn.send((sent, time.perf_counter() - t0))
    conn.close()


class Producer:
    def __init__(self, prog_fd: int, total: int, batch: int = 4096, rate: float | None = None, pin: bool = True) -> None:
        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_producer, args=(prog_fd, total, batch, rate, PRODUCER_CPU if pin else -1, child), daemon=True)
        self.proc.start()
        child.close()
        self.result: tuple[int, float] | None = None

    def go(self) -> None:
        self.conn.send(True)

    def done(self) -> bool:
        if self.result is None and self.conn.poll():
            self.result = self.conn.recv()
            self.proc.join()
        return self.result is not None

    def wait(self) -> tuple[int, float]:
        while not self.done():
            time.sleep(0.001)
        return self.result


# --- what-if: the consumer position stored with one aligned write -------------

class _AlignedStore:
    """Stands in for the ``struct`` module inside tracer.drain: ``pack_into``
    of one u64 becomes a single aligned 8-byte store (no zero-fill first)."""

    def __getattr__(self, name):
        return getattr(struct, name)

    @staticmethod
    def pack_into(fmt, buffer, offset, *values):
        if fmt == "<Q" and len(values) == 1 and offset % 8 == 0:
            np.frombuffer(buffer, dtype="<u8", count=1, offset=offset)[0] = values[0]
        else:
            struct.pack_into(fmt, buffer, offset, *values)


@contextlib.contextmanager
def aligned_consumer_store():
    drain_module.struct = _AlignedStore()
    try:
        yield
    finally:
        drain_module.struct = struct


# --- the bench ------------------------------------------------------------------

class Bench:
    def __init__(self, pin: bool) -> None:
        from bcc import BPF

        self.pin = pin
        # One record per sighting: this measures the drain itself, at event rates.
        self.bpf = Program([TcSensor([])], Filter(), sightings=True).compile()
        self.prog_fd = self.bpf.load_func("trc_tc_in", BPF.SCHED_CLS).fd
        self.ring = self.bpf["events"]
        self.drain = RingBufferDrain(self.ring.map_fd, RINGBUF_PAGES * 4096)
        netns = os.stat("/proc/self/ns/net").st_ino
        self.ctx = DecodeContext(host_netns=netns, drop_reasons={}, book=PlaceBook(netns, host_interfaces_without_docker))
        self._baseline_list: list[bytes] = []
        self._baseline_open = False
        self.rows = 0  # rows of Arrow produced (checked against events drained)

    def close(self) -> None:
        self.drain.close()
        self.bpf.cleanup()

    def lost(self) -> int:
        table = self.bpf["counters"]
        return int(sum(table[table.Key(2 * SENSOR_TC + 1)]))

    def emitted(self) -> int:
        table = self.bpf["counters"]
        return int(sum(table[table.Key(2 * SENSOR_TC)]))

    def empty(self) -> bool:
        return self.drain.pending_bytes() < 8

    # ours: one poll step, returns events decoded
    def ours_step(self, timeout: float, writer=None) -> int:
        if not self.drain.wait(timeout):
            return 0
        raw = self.drain.read()
        if not len(raw):
            return 0
        table = decode(raw, self.ctx)
        self.rows += table.num_rows
        if writer is not None:
            writer.add_events(table)
        return len(raw)

    # baseline: BCC per-record callback
    def _baseline_cb(self, ctx, data, size):
        self._baseline_list.append(ctypes.string_at(data, size))
        return 0

    def baseline_step(self, timeout: float) -> int:
        if not self._baseline_open:
            self.ring.open_ring_buffer(self._baseline_cb)
            self._baseline_open = True
        before = len(self._baseline_list)
        self.bpf.ring_buffer_poll(int(timeout * 1000))
        n = len(self._baseline_list) - before
        if len(self._baseline_list) >= BASELINE_CHUNK:
            self.baseline_flush()
        return n

    def baseline_flush(self) -> None:
        if not self._baseline_list:
            return
        raw = np.frombuffer(b"".join(self._baseline_list), dtype=events.RAW_DTYPE)
        self._baseline_list = []
        self.rows += decode(raw, self.ctx).num_rows

    def settle(self) -> None:
        """Empty the ring (between runs)."""
        while not self.empty():
            self.drain.read()

    def run(self, kind: str, total: int, rate: float | None = None, batch: int = 4096) -> dict:
        """Produce ``total`` events (at ``rate``/s if given); consume with ``kind``."""
        self.settle()
        step = self.ours_step if kind == "ours" else self.baseline_step
        lost0, emitted0, rows0 = self.lost(), self.emitted(), self.rows
        prod = Producer(self.prog_fd, total, batch, rate, self.pin)
        drained = 0
        c0 = time.process_time()
        t0 = time.perf_counter()
        prod.go()
        while True:
            drained += step(0.01)
            if prod.done() and self.empty():
                drained += step(0)
                break
        if kind == "baseline":
            self.baseline_flush()
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        runs, prod_s = prod.result
        lost = self.lost() - lost0
        emitted = self.emitted() - emitted0
        assert self.rows - rows0 == drained, (self.rows - rows0, drained)
        assert drained == emitted, (drained, emitted)
        return {
            "kind": kind, "events": drained, "lost": lost, "produced": runs, "wall_s": wall, "cpu_s": cpu,
            "rate": drained / wall, "cpu_rate": drained / cpu if cpu else float("inf"),
            "producer_rate": runs / prod_s, "target_rate": rate,
        }

    def burst(self, fill: int, cycles: int) -> dict:
        """Fill the ring (consumer idle), then drain+decode it flat out."""
        events_n, cpu = 0, 0.0
        lost0 = self.lost()
        for _ in range(cycles):
            self.settle()
            prod = Producer(self.prog_fd, fill, 4096, None, self.pin)
            prod.go()
            prod.wait()
            c0 = time.perf_counter()
            while not self.empty():
                raw = self.drain.read()
                self.rows += decode(raw, self.ctx).num_rows
                events_n += len(raw)
            cpu += time.perf_counter() - c0
        return {"events": events_n, "seconds": cpu, "rate": events_n / cpu, "lost": self.lost() - lost0}


def fmt_rate(r: float) -> str:
    return f"{r / 1e6:6.2f} M/s"


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=2_000_000, help="events per run (default 2,000,000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (ours, baseline), order alternating")
    ap.add_argument("--sweep", default="0.5,1,1.5,2,2.5,3", help="producer rates (M events/s) for the zero-loss sweep")
    ap.add_argument("--minutes", type=float, default=0, help="then run ours for this long and report peak RSS")
    ap.add_argument("--memory-rate", type=float, default=2.0, help="producer rate (M events/s) for --minutes")
    ap.add_argument("--capture", action="store_true", help="with --minutes: also write the tables through CaptureWriter")
    ap.add_argument("--no-what-if", dest="what_if", action="store_false",
                    help="skip the sweep with an aligned consumer-position store")
    ap.add_argument("--no-pin", action="store_true", help="do not pin producer/consumer to CPUs 1/0")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_drain: needs root (BPF)", file=sys.stderr)
        return 2
    if args.quick:
        args.events, args.rounds, args.sweep, args.what_if = 100_000, 1, "1", False

    pin = not args.no_pin and os.cpu_count() and os.cpu_count() >= 2
    if pin:
        pin = _pin(CONSUMER_CPU)
    bench = Bench(bool(pin))
    try:
        print(f"bench_drain: {os.cpu_count()} CPUs, consumer on CPU {CONSUMER_CPU if pin else '*'}, producer "
              f"(BPF_PROG_TEST_RUN of trc_tc_in) on CPU {PRODUCER_CPU if pin else '*'}; ring {RINGBUF_PAGES * 4} KiB "
              f"= {RING_RECORDS:,} records of {events.EVENT_SIZE} B; {args.events:,} events per run", flush=True)
        results: dict[str, list[dict]] = {"ours": [], "baseline": []}
        bench.run("ours", min(args.events, 200_000))  # warm up (imports, page faults, caches)
        for r in range(args.rounds):
            order = ("ours", "baseline") if r % 2 == 0 else ("baseline", "ours")
            for kind in order:
                res = bench.run(kind, args.events)
                results[kind].append(res)
                print(f"  round {r + 1} {kind:8s}: {fmt_rate(res['rate'])} wall, {fmt_rate(res['cpu_rate'])} per CPU-s, "
                      f"{res['events']:,} drained, {res['lost']:,} lost, producer {fmt_rate(res['producer_rate'])}", flush=True)

        def med(kind: str, key: str) -> float:
            return statistics.median(x[key] for x in results[kind])

        burst = bench.burst(fill=min(RING_RECORDS * 9 // 10, args.events), cycles=2 if args.quick else 5)
        print(f"  burst (ring pre-filled with {min(RING_RECORDS * 9 // 10, args.events):,}, drained flat out): "
              f"{fmt_rate(burst['rate'])}, {burst['lost']:,} lost", flush=True)

        def do_sweep(label: str) -> list[dict]:
            out = []
            for mrate in [float(x) for x in args.sweep.split(",") if x]:
                res = bench.run("ours", args.events, rate=mrate * 1e6)
                out.append(res)
                print(f"  sweep {label} at {mrate:4.2f} M/s offered: producer {fmt_rate(res['producer_rate'])}, "
                      f"drained {fmt_rate(res['rate'])}, {res['lost']:,} lost, consumer CPU {100 * res['cpu_s'] / res['wall_s']:.0f}%",
                      flush=True)
            return out

        sweep = do_sweep("ours")
        sweep_fixed = []
        if args.what_if:
            with aligned_consumer_store():
                sweep_fixed = do_sweep("ours+aligned store")

        ours_w, base_w = med("ours", "rate"), med("baseline", "rate")
        ours_c, base_c = med("ours", "cpu_rate"), med("baseline", "cpu_rate")
        def best_zero_loss(runs: list[dict]) -> float:
            """Highest offered rate such that it and every lower rate lost nothing."""
            best = 0.0
            for s in sorted(runs, key=lambda s: s["target_rate"]):
                if s["lost"]:
                    break
                best = s["producer_rate"]
            return best

        best_zero = best_zero_loss(sweep)
        print()
        print(f"drain kernel -> Arrow, one consumer core, medians of {args.rounds} alternating rounds")
        print(f"  {'':28s} {'ours':>12s} {'baseline':>12s} {'ratio':>7s}")
        print(f"  {'events/s (wall)':28s} {fmt_rate(ours_w):>12s} {fmt_rate(base_w):>12s} {ours_w / base_w:6.1f}x")
        print(f"  {'events per consumer CPU-s':28s} {fmt_rate(ours_c):>12s} {fmt_rate(base_c):>12s} {ours_c / base_c:6.1f}x")
        print(f"  {'lost (median per run)':28s} {med('ours', 'lost'):>12,.0f} {med('baseline', 'lost'):>12,.0f}")
        print(f"  {'producer rate (median)':28s} {fmt_rate(med('ours', 'producer_rate')):>12s} {fmt_rate(med('baseline', 'producer_rate')):>12s}")
        print(f"  burst drain of a full ring (ours): {fmt_rate(burst['rate'])}")
        print(f"  highest offered rate with zero loss (ours): {fmt_rate(best_zero)}")
        if sweep_fixed:
            print(f"  highest offered rate with zero loss (ours, aligned consumer-position store): "
                  f"{fmt_rate(best_zero_loss(sweep_fixed))}")
        target_ok = ours_w >= 2e6 and ours_w / base_w >= 4 and best_zero >= min(2e6, ours_w * 0.9)
        print(f"  target >= 2.00 M/s and >= 4x baseline, zero loss below the sustained rate: {'met' if target_ok else 'NOT met'}")

        if args.minutes > 0:
            memory(bench, args.minutes, args.memory_rate * 1e6, args.capture)
    finally:
        bench.close()
    return 0


def memory(bench: Bench, minutes: float, rate: float, capture: bool = False) -> None:
    """Ours at ``rate`` for ``minutes``: RSS over time and peak."""
    import shutil
    import tempfile

    from tracer.capture.writer import CaptureWriter

    tmpdir = tempfile.mkdtemp(prefix="bench-drain-capture-") if capture else None
    writer = CaptureWriter(Path(tmpdir) / "bench.arrows", {"command": "bench_drain"}, rotate_size=256 << 20) if capture else None
    seconds = minutes * 60
    total = int(rate * seconds)
    bench.settle()
    lost0 = bench.lost()
    start_rss = rss_kb()
    prod = Producer(bench.prog_fd, total, 4096, rate, bench.pin)
    drained, samples = 0, []
    t0 = time.perf_counter()
    next_sample = t0
    prod.go()
    c0 = time.process_time()
    while True:
        drained += bench.ours_step(0.01, writer)
        now = time.perf_counter()
        if writer is not None:
            writer.tick()
            for old in writer.paths[:-1]:  # rotated away: keep the disk use bounded too
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()
        if now >= next_sample:
            samples.append((now - t0, rss_kb()))
            next_sample += max(1.0, seconds / 20)
        if prod.done() and bench.empty():
            break
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    written = 0
    if writer is not None:
        writer.close()
        written = writer.bytes_written
        shutil.rmtree(tmpdir, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print()
    print(f"memory: ours{' + CaptureWriter' if writer else ''} for {wall:.0f} s at {fmt_rate(rate)} offered: {drained:,} "
          f"events drained ({fmt_rate(drained / wall)}), {bench.lost() - lost0:,} lost, consumer CPU {100 * cpu / wall:.0f}%"
          + (f", {written / 1e6:,.0f} MB written ({written / max(drained, 1):.2f} B/event)" if writer else ""))
    print("  RSS over time (s: MiB): " + ", ".join(f"{t:.0f}: {kb / 1024:.0f}" for t, kb in samples))
    print(f"  RSS at start {start_rss / 1024:.0f} MiB, at end {rss_kb() / 1024:.0f} MiB, peak (ru_maxrss) {peak / 1024:.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
