"""Two recordings read together (`tracer show A B`, `stats A B`, `report A
B`): different ktime offsets (two boots, two sessions), so each file's rows
take their own file's wall clock, and a packet of one is never joined to a
packet of the other with the same id (packet ids restart with each
session's programs). Before: B's journeys that shared an id with A's were
joined to them and shown at A's time, and the sighting rows laid out of
journey rows of both files (analysis: the slowest journeys, packets that
go the sighting way) all took A's clock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

from tests.unit.test_journey_capture import META, ctx
from tests.unit.test_journey_records import records
from tracer.analysis import CaptureAnalysis
from tracer.capture.reader import open_capture
from tracer.capture.writer import CaptureWriter
from tracer.packet_window import PacketWindow

REPO = Path(__file__).resolve().parents[2]
A_OFFSET, B_OFFSET = 1_000, 5 * 3600 * 10**9


def _recording(path: Path, offset: int, shift: int = 0) -> Path:
    """records() as one recording with this ktime offset; ``shift`` moves its
    packet ids and clock (0: the same ids and ktimes as another's)."""
    recs = records()
    recs["packet_id"] += shift
    recs["first_ktime"] += 1_000_000 * shift
    recs["last_ktime"] += 1_000_000 * shift
    with CaptureWriter(path, {**META, "ktime_offset_ns": str(offset)}, journeys=True) as w:
        w.add_journeys(recs, ctx())
    return path


def _show(*paths: Path) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "tracer", "show", "--json", *map(str, paths)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def _wall_offsets(journeys: list[dict]) -> list[int]:
    from datetime import datetime

    out = []
    for j in journeys:
        sec, frac = j["time"][:-1].split(".")
        wall = int(datetime.fromisoformat(sec + "+00:00").timestamp()) * 10**9 + int(frac)
        out.append(wall - j["ktime_ns"])
    return out


def test_show_keeps_each_recordings_clock_and_packets(tmp_path):
    a = _recording(tmp_path / "a.arrows", A_OFFSET)
    b = _recording(tmp_path / "b.arrows", B_OFFSET)  # the same ids and ktimes, another clock
    alone_a, alone_b, both = _show(a), _show(b), _show(a, b)
    assert len(both) == len(alone_a) + len(alone_b)
    assert both == alone_a + alone_b
    assert set(_wall_offsets(both[:len(alone_a)])) == {A_OFFSET}
    assert set(_wall_offsets(both[len(alone_a):])) == {B_OFFSET}


def test_the_analysis_keeps_each_recordings_clock(tmp_path):
    a = _recording(tmp_path / "a.arrows", A_OFFSET)
    b = _recording(tmp_path / "b.arrows", B_OFFSET, shift=1000)
    ca = CaptureAnalysis.of_capture(open_capture([str(a), str(b)]), slowest=50)
    slow = ca.slowest_journeys(50)
    assert len(slow) == 2 * len(_show(a))
    for j in slow:
        assert j.time_ns - j.first_ktime == (B_OFFSET if j.first_ktime >= 1_000_000_000 else A_OFFSET), hex(j.packet_id)
    apart = [CaptureAnalysis.of_capture(open_capture([str(p)])).analyse() for p in (a, b)]
    together = ca.analyse()
    assert together.packets == sum(r.packets for r in apart)
    assert (together.start, together.end) == (apart[0].start, apart[1].end)


def test_the_window_hands_on_what_it_holds_when_the_recording_changes():
    def batch(offset: int) -> pa.Table:
        kt = np.array([10, 20, 30], np.int64)
        return pa.table({"packet_id": pa.array([1, 1, 2], pa.uint64()), "ktime_ns": pa.array(kt.astype(np.uint64)),
                         "time": pa.array(kt + offset, pa.int64()).cast(pa.timestamp("ns", tz="UTC"))})

    window = PacketWindow()
    assert list(window.add(batch(A_OFFSET))) == []  # held: the clock has not moved on
    out = list(window.add(batch(B_OFFSET)))  # the same ids on another clock: A's are whole
    assert [t.num_rows for t in out] == [3]
    assert set(out[0]["time"].cast(pa.int64()).to_pylist()) == {10 + A_OFFSET, 20 + A_OFFSET, 30 + A_OFFSET}
    assert [t.num_rows for t in window.flush()] == [3]
    same = PacketWindow()  # rotated parts of one recording: one clock, held together
    assert list(same.add(batch(A_OFFSET))) == [] and list(same.add(batch(A_OFFSET))) == []
    assert [t.num_rows for t in same.flush()] == [6]


def test_journey_rows_of_two_recordings_laid_out_in_one_call_keep_each_clock(tmp_path):
    """journey_sightings on rows of two recordings together (its contract:
    one file's rows or several files'; the packet window hands the analysis
    one recording's, but a caller need not): each sighting takes its own
    row's wall clock minus ktime, not the first row's."""
    from tracer.journey_capture import JourneyBatch, journey_sightings

    a = _recording(tmp_path / "a.arrows", A_OFFSET)
    b = _recording(tmp_path / "b.arrows", B_OFFSET, shift=1000)
    stream = open_capture([str(a), str(b)])
    parts = [x for x in stream.batches(journeys=True) if isinstance(x, JourneyBatch)]
    assert len(parts) >= 2
    rows = pa.Table.from_batches([p.rows for p in parts])
    sightings = journey_sightings(rows, stream.places)
    wall = sightings["time"].cast(pa.int64()).to_numpy()
    ktime = sightings["ktime_ns"].cast(pa.int64()).to_numpy()
    offsets = wall - ktime
    from_b = ktime >= 1_000_000_000  # shift=1000: B's clock is 1 s on
    assert from_b.any() and (~from_b).any()
    assert set(offsets[~from_b].tolist()) == {A_OFFSET}
    assert set(offsets[from_b].tolist()) == {B_OFFSET}


def _rotated(path: Path, splits: list[int]) -> list[Path]:
    """records() as one recording rotated into parts at ``splits`` (record
    indices): packet 101's (0x65) first record and the drop that ends it go to
    two parts when a split falls between them."""
    recs = records()
    with CaptureWriter(path, {**META, "ktime_offset_ns": str(A_OFFSET)}, journeys=True, rotate_size=1) as w:
        for lo, hi in zip([0, *splits], [*splits, len(recs)]):
            w.add_journeys(recs[lo:hi], ctx())
            w.flush()
            w.tick()
    return list(w.paths)


def test_the_same_recording_read_twice_is_two_recordings(tmp_path):
    """`tracer show a.arrows a.arrows` (or a copy of a file beside it): the
    same clock, the same packet ids, within the packet window of each other.
    The reader tells the window where the second recording starts: each
    copy's journeys, not one journey of both copies' hops."""
    a = _recording(tmp_path / "a.arrows", A_OFFSET)
    alone = _show(a)
    assert _show(a, a) == alone + alone
    ca = CaptureAnalysis.of_capture(open_capture([str(a), str(a)]))
    one = CaptureAnalysis.of_capture(open_capture([str(a)])).analyse()
    assert ca.analyse().packets == 2 * one.packets
    assert ca.analyse().events == 2 * one.events
    for journeys in (True, False):  # the sighting path too (its own window)
        assert CaptureAnalysis.of_capture(open_capture([str(a)] * 3), journeys=journeys).analyse().packets == 3 * one.packets
    from tracer.pcapng import export_pcapng  # the export's window takes the marks too

    once, twice = (export_pcapng(open_capture([str(a)] * k).sightings(boundaries=True), tmp_path / f"{k}.pcapng")
                   for k in (1, 2))
    assert twice == 2 * once > 0


def test_a_packet_goes_on_into_the_next_part_of_its_recording(tmp_path):
    """Rotated parts of one recording read in order are one recording: a
    packet whose later part was written to the next file is one journey,
    as from the same records in one file. A part read twice, or parts out
    of order, are not the next part."""
    one = _recording(tmp_path / "one.arrows", A_OFFSET)
    (tmp_path / "rot").mkdir()
    parts = _rotated(tmp_path / "rot" / "cap.arrows", [1, 5])  # packet 101 split across cap.0000 and cap.0001
    assert len(parts) == 3
    whole = _show(one)
    assert _show(*parts) == whole
    assert [len(j["hops"]) for j in whole if j["packet_id"] == "65"] == [7]  # packet 101 (printed 65): with its drop
    together = CaptureAnalysis.of_capture(open_capture(list(map(str, parts)))).analyse()
    assert together.to_dict() == CaptureAnalysis.of_capture(open_capture([str(one)])).analyse().to_dict()
    again = _show(parts[0], parts[0])  # the first part twice: two recordings, 101's first record in each
    assert len(again) == 2 * len(_show(parts[0]))


def test_which_file_is_the_next_part():
    from tracer.capture.reader import next_part

    meta = {**META, "ktime_offset_ns": "7"}
    assert next_part({**meta, "part": "3"}, {**meta, "part": "4", "start_time": "2026-11-30T00:00:09Z"})
    assert not next_part({**meta, "part": "3"}, {**meta, "part": "3"})  # the same file twice
    assert not next_part({**meta, "part": "4"}, {**meta, "part": "3"})  # out of order
    assert not next_part({**meta, "part": "3"}, {**meta, "part": "5"})  # a part left out
    assert not next_part({**meta, "part": "0"}, {**meta, "part": "1", "ktime_offset_ns": "8"})  # another session
    assert not next_part({**meta, "part": "0"}, {**meta, "part": "x"})
    assert not next_part(meta, {**meta, "part": "1"})
    # written before parts were numbered: each part's start_time is when it was opened
    assert next_part(meta, {**meta, "start_time": "2026-11-30T00:00:01.000000000Z"})
    assert not next_part(meta, dict(meta))
    assert not next_part({**meta, "start_time": "2026-11-30T00:00:01Z"}, meta)
    assert not next_part({k: v for k, v in meta.items() if k != "start_time"}, {k: v for k, v in meta.items() if k != "start_time"})


def test_the_window_hands_on_what_it_holds_at_a_new_recording():
    from tracer.packet_window import NEW_RECORDING

    rows = pa.table({"packet_id": pa.array([1, 1, 2], pa.uint64()), "ktime_ns": pa.array([10, 20, 30], pa.uint64())})
    window = PacketWindow()
    assert list(window.add(rows)) == []
    out = list(window.add(NEW_RECORDING))  # the same ids and clock next: what is held is whole
    assert [t.num_rows for t in out] == [3]
    assert list(window.add(rows)) == []
    assert [t.num_rows for t in window.flush()] == [3]
    assert [t.num_rows for t in PacketWindow().packets([rows, NEW_RECORDING, rows])] == [3, 3]
    assert [t.num_rows for t in PacketWindow().packets([rows, rows])] == [6]
