"""tracer/kernel/sweep.py: which walk each sweep asks trc_sweep for (the
packet cache, or every JOURNEY_WALK_EVERY-th sweep and at the flush the
journey slots, which reach a journey no packet-cache slot leads to), and how
many runs cover it. A stand-in for the kernel: the map write and the test
run are what is checked."""

from __future__ import annotations

from tracer.kernel import sweep


class _Table(dict):
    def Key(self, i):  # noqa: N802 - BCC's table API
        return i


class _Bpf:
    def __init__(self) -> None:
        self.tables = {"sweep_args": _Table()}

    def __getitem__(self, name):
        return self.tables[name]

    def load_func(self, name, kind):
        return type("Fn", (), {"fd": -1})()


class _Runner:
    def __init__(self) -> None:
        self.runs: list[int] = []

    def run(self, repeat: int) -> None:
        self.runs.append(repeat)


def _sweeper(monkeypatch, packet_entries=16384, journey_slots=8192 + 100, chunk=256):
    runner = _Runner()
    monkeypatch.setattr(sweep, "ProgTestRun", lambda fd, packet: runner)
    bpf = _Bpf()
    return sweep.JourneySweeper(bpf, packet_entries, journey_slots, 20_000_000, chunk=chunk, journey_chunk=chunk), bpf, runner


def test_every_nth_sweep_walks_the_journey_slots(monkeypatch):
    s, bpf, runner = _sweeper(monkeypatch)
    walks = []
    for _ in range(2 * sweep.JOURNEY_WALK_EVERY):
        s.sweep()
        args = bpf["sweep_args"][0]
        walks.append((args.journeys, args.idle_ns))
    assert [w for w, _ in walks].count(1) == 2 and walks[sweep.JOURNEY_WALK_EVERY - 1] == (1, 20_000_000)
    assert all(idle == 20_000_000 for _, idle in walks)
    # 64 runs cover the cache; the journey slots' last chunk is short: 33 runs
    assert set(runner.runs) == {64, 33} and runner.runs[sweep.JOURNEY_WALK_EVERY - 1] == 33


def test_the_flush_walks_the_journey_slots_with_no_idle_time(monkeypatch):
    s, bpf, runner = _sweeper(monkeypatch)
    s.sweep()
    s.flush()
    args = bpf["sweep_args"][0]
    assert (args.journeys, args.idle_ns, args.cursor) == (1, 0, 0) and runner.runs == [64, 33]


def test_the_flush_walks_again_while_journeys_stay_open(monkeypatch):
    """A slot a straggling program was in is skipped by a pass: the flush
    walks again while the kernel still counts journeys open, and stops at
    FLUSH_PASSES, saying how many were left."""
    monkeypatch.setattr(sweep, "FLUSH_RETRY_S", 0.0)
    s, bpf, runner = _sweeper(monkeypatch)
    left = iter([2, 0])
    assert s.flush(lambda: next(left)) == 0 and runner.runs == [33, 33]
    runner.runs.clear()
    assert s.flush(lambda: 5) == 5 and runner.runs == [33] * sweep.FLUSH_PASSES
    runner.runs.clear()
    assert s.flush() == 0 and runner.runs == [33]  # nothing to ask: one pass


def test_each_walk_has_its_own_chunk(monkeypatch):
    """The packet-cache walk and the journey-slot walk cover their slots in
    runs of their own chunk sizes (SWEEP_CHUNK, JOURNEY_SWEEP_CHUNK)."""
    runner = _Runner()
    monkeypatch.setattr(sweep, "ProgTestRun", lambda fd, packet: runner)
    s = sweep.JourneySweeper(_Bpf(), 16384, 8192 + 100, 20_000_000, chunk=32, journey_chunk=16)
    s.sweep()
    s.sweep_journey_slots()
    assert runner.runs == [16384 // 32, -(-(8192 + 100) // 16)] == [512, 519]


def test_the_chunks_default_to_the_programs_own(monkeypatch):
    """Only the slot counts given (the tracer's own use): each walk is in
    runs of the chunk the program is built with, and giving the packet
    cache's chunk alone leaves the journey walk's at the program's."""
    from tracer.kernel.program import JOURNEY_SWEEP_CHUNK, SWEEP_CHUNK

    assert SWEEP_CHUNK != JOURNEY_SWEEP_CHUNK  # else this test shows nothing
    runner = _Runner()
    monkeypatch.setattr(sweep, "ProgTestRun", lambda fd, packet: runner)
    for s in (sweep.JourneySweeper(_Bpf(), 16384, 8192 + 100, 20_000_000),
              sweep.JourneySweeper(_Bpf(), 16384, 8192 + 100, 20_000_000, chunk=SWEEP_CHUNK)):
        s.sweep()
        s.sweep_journey_slots()
    assert runner.runs == [16384 // SWEEP_CHUNK, -(-(8192 + 100) // JOURNEY_SWEEP_CHUNK)] * 2
