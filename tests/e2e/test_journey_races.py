"""Journeys in the kernel (bpf/journey.h) driven from two CPUs at once:
threads pinned to two CPUs run the real tc programs through
BPF_PROG_TEST_RUN (which runs a tc program on the calling thread's CPU) on a
small journey pool, so slots are taken, written and closed by both CPUs in
the same microseconds. Each case waits until the kernel's counters or the
records show the two CPUs met, and fails a run where they did not."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.e2e.journey_kernel import MarkedRecords, frame_marked, pcache_holds, pcache_set_index


CONTENDED = 1  # guard refusals the cross-CPU case waits for
MAX_CLAIMS = 900_000  # its packets' seq (base + i * 4096) must not wrap


def contended(k, before: dict[str, int]) -> int:
    """Guard refusals since ``before`` (k.faults()): a hop refused or a claim
    failed, the two CPUs in one slot at the same moment."""
    now = k.faults()
    return sum(now[name] - before[name] for name in ("hop_refused", "claim_failed"))


def run_until(k, recs, stop, threads, start: float, done) -> float:
    """Read the records as the drivers run (the ring holds a few hundred)
    until done(seconds elapsed) or 60 s; then stop the drivers, flush every
    open journey and read the rest. Returns the seconds the drivers ran."""
    while True:
        time.sleep(0.02)
        recs.add(k.records())
        elapsed = time.monotonic() - start
        if elapsed >= 60.0 or done(elapsed):
            break
    stop.set()
    for t in threads:
        t.join()
    k.sweeper.flush()
    recs.add(k.records())
    return elapsed


def test_sightings_on_two_cpus_never_put_a_hop_in_another_packets_journey(small):
    """The cross-CPU case of the pool: one thread pinned to one CPU claims
    packet after packet (its pool of SMALL_POOL comes round every few
    claims), another pinned to a second CPU keeps appending hops to the
    packets the first just claimed, whose journey slots are in the first
    CPU's pool. BPF_PROG_TEST_RUN runs a tc program on the calling thread's
    CPU (its cpu/flags options are for raw tracepoints only), so pinned
    threads are how two CPUs drive one flow at once. Every record must hold
    one packet's hops only: its own TTL at each hop, its own addresses (one
    tuple); what could not be written is counted, and the kernel's own
    check after each write (mismatch) stays 0."""
    import os
    import threading

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("one CPU: no cross-CPU case to drive")
    k = small
    base = 0x10000000
    faults_before = k.faults()
    balance_before = k.balance()
    ring_lost_before = k.ring_lost()
    latest = [-1]
    stop = threading.Event()
    errors: list[BaseException] = []

    def seq_of(i: int) -> int:
        return (base + i * 4096) & 0xFFFFFFFF

    def claimer() -> None:
        try:
            os.sched_setaffinity(0, {cpus[0]})
            i = 0
            while not stop.is_set() and i < MAX_CLAIMS:
                k.run_cls(k.fd["trc_tc_in"], frame_marked(i, seq_of(i))).run(1)
                latest[0] = i
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    def appender() -> None:
        try:
            os.sched_setaffinity(0, {cpus[1]})
            r = 0
            while not stop.is_set():
                # The packet just claimed, and in turn the ones before it
                # whose pool slots the claimer is about to take back: where
                # the two CPUs meet in one slot.
                i = latest[0] - r % k.pool
                r += 1
                if i >= 0:  # 4 hops in one test run: the full path, then the tc fast path
                    k.run_cls(k.fd["trc_tc_in"], frame_marked(i, seq_of(i))).run(4)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=claimer), threading.Thread(target=appender)]
    recs = MarkedRecords(lambda r: ((r["tcp_seq"].astype(np.int64) - base) % (1 << 32)) // 4096)
    for t in threads:
        t.start()
    # At least 5 s (the old unguarded pool mixed a record in about one 3 s run
    # of four here), then on until the guard was contended at least
    # CONTENDED times (a hop refused or a claim failed: the two CPUs met in
    # one slot), up to 60 s: a run where they never met proves nothing.
    start = time.monotonic()

    elapsed = run_until(k, recs, stop, threads, start, lambda t: latest[0] >= MAX_CLAIMS - 1
                        or (t >= 5.0 and contended(k, faults_before) >= CONTENDED))
    assert not errors, errors
    faults = {name: n - faults_before[name] for name, n in k.faults().items()}
    assert recs.count > 1000, recs.count
    assert not recs.problem(), recs.problem()
    assert faults["mismatch"] == 0, faults
    opened, emitted = (a - b for a, b in zip(k.balance(), balance_before))
    assert opened == emitted, f"opened {opened}, emitted {emitted}: every journey out once"
    assert recs.count + k.ring_lost() - ring_lost_before == emitted, (recs.count, emitted)
    met = faults["hop_refused"] + faults["claim_failed"]
    assert met >= CONTENDED, (
        f"the two CPUs never met in a journey slot in {elapsed:.0f} s (hop_refused + claim_failed = {met}, "
        f"{recs.count} records, faults {faults}): the guard was not exercised, the case proves nothing on this run")
    # The case was driven: journeys the second CPU appended to were taken
    # back by the first CPU's pool (evicted with more than their first hop).
    assert recs.evicted_appended > 0, (recs.count, faults)


MET = 20  # claims cut short by the other CPU that the race case waits for
MET_AT_ONCE = 20  # and hops refused or claims failed: the two CPUs in one slot at the same moment


def test_two_cpus_claiming_one_slot_emit_every_journey_once(small):
    """Two threads pinned to two CPUs drive the same four packets, whose
    fingerprints share one packet-cache set (two slots), in opposite
    orders, each packet a few hops then a container-ingress hop that ends
    it, twice (the second a continuation). So claims on both CPUs take the
    same slots from each other as they write them, continuations meet
    claims and closes, and the small pool comes round under both.
    Whatever the interleaving, every journey opened is emitted exactly once
    (opened == emitted after the flush: the kernel's
    counters, and the records read), each record holds one packet's hops
    only, no packet id is carried by two packets' records, and the
    kernel's own check (mismatch) stays 0. The run goes on until the two
    CPUs met at least MET times (up to 60 s): a journey evicted with its
    first hop only, the claim's (a claim writes its next two hops in the
    next test run, microseconds later: only the other CPU's claim takes the
    set's slot in between), and at least MET_AT_ONCE times inside one slot
    at the same moment (a hop refused or a claim failed: the guards were
    contended, not just taken in turn). Where they meet, a sighting may match a
    fingerprint just before the other CPU's claim gives the slot to
    another packet (session 10's residual race, ~1 record in 400,000): it
    must find that packet's journey and leave it alone (foreign_hop)."""
    import os
    import threading

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("one CPU: no cross-CPU case to drive")
    k = small
    seq = 0x30000000
    target, ids = pcache_set_index(1, seq, k.entries), []
    for i in range(1, 65536):
        if pcache_set_index(i, seq, k.entries) == target:
            ids.append(i)
            if len(ids) == 4:
                break
    packets = [frame_marked(i, seq) for i in ids]
    k.see("trc_tc_in", packets[0])
    assert pcache_holds(k, target, seq), "the kernel's set is the one computed here"
    k.sweeper.flush()
    k.records()
    balance_before, faults_before, ring_lost_before = k.balance(), k.faults(), k.ring_lost()
    stop = threading.Event()
    errors: list[BaseException] = []

    def driver(cpu: int, order: list[bytes]) -> None:
        try:
            os.sched_setaffinity(0, {cpu})
            while not stop.is_set():
                for packet in order:
                    # A claim (or a join), then its next hops in a second
                    # call: the other CPU's claims have the gap between two
                    # syscalls to take the set's slot in, not the few hundred
                    # ns between two runs of one (a VM whose two vCPUs seldom
                    # run at the same moment met 5-7 times a minute that way).
                    k.run_cls(k.fd["trc_tc_in"], packet).run(1)
                    k.run_cls(k.fd["trc_tc_in"], packet).run(2)
                    k.run_cls(k.fd["trc_tc_in_ct"], packet).run(2)  # its end, then a continuation that ends
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=driver, args=(cpus[0], packets)),
               threading.Thread(target=driver, args=(cpus[1], packets[::-1]))]
    for t in threads:
        t.start()
    # Each record's packet by its source port (frame_marked: 20000 + i),
    # so its IP id and TTL are checked against it, not against themselves.
    by_sport = np.full(65536, -1, dtype=np.int64)
    for i in ids:
        by_sport[20000 + i % 30000] = i
    assert len({20000 + i % 30000 for i in ids}) == len(ids), ids
    recs = MarkedRecords(lambda r: by_sport[r["tuples"][:, 0]["sport"].astype(np.int64)])

    def met() -> int:
        return recs.evicted_first_hop_only

    def at_once() -> int:
        return contended(k, faults_before)

    start = time.monotonic()
    elapsed = run_until(k, recs, stop, threads, start,
                        lambda t: t >= 3.0 and met() >= MET and at_once() >= MET_AT_ONCE)
    assert not errors, errors
    faults = {name: n - faults_before[name] for name, n in k.faults().items()}
    opened, emitted = (a - b for a, b in zip(k.balance(), balance_before))
    print(f"race case: {elapsed:.1f} s, met {met()}, opened {opened}, emitted {emitted}, "
          f"faults {faults}, records {recs.count} by end {recs.ends}")
    assert opened == emitted, f"opened {opened}, emitted {emitted}, faults {faults}"
    assert recs.count + k.ring_lost() - ring_lost_before == emitted, (recs.count, emitted)
    assert faults["mismatch"] == 0, faults
    assert recs.count > 1000 and set(recs.ends) >= {"terminal", "evicted"}, recs.ends
    # Not one record may mix packets or share an id (the residual race of
    # session 10, ~1 record in 400,000, is closed: docs/benchmarks.md,
    # "Session 11: residual race").
    assert not recs.problem(), recs.problem()
    assert met() >= MET and at_once() >= MET_AT_ONCE, (
        f"claims on the two CPUs met in the set only {met()} times, {at_once()} of them in one slot at once, in "
        f"{elapsed:.0f} s ({recs.count} records, faults {faults}): the race was not driven, the case proves nothing "
        "on this run")
