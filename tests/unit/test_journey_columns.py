"""Journey rows gathered pass by pass (tracer/journey_columns.py): the rows
of records added a few at a time, through the columns' growth, are the rows
of the same records laid out at once; a taken table is never written over;
the capture writer lays each add's records out as they come."""

from __future__ import annotations

import numpy as np

from tests.unit.test_decode import ctx
from tests.unit.test_journey_records import records
from tracer import events, journey_layout
from tracer.capture.reader import read_capture
from tracer.capture.writer import CaptureWriter
from tracer.journey_capture import PlaceIds, journey_rows
from tracer.journey_columns import JourneyColumns

META = {"host": "testhost", "kernel": "6.1.0", "version": "0", "command": "tracer record", "filter": "",
        "start_time": "2026-11-30T00:00:00Z", "ktime_offset_ns": "0", "containers": "[]", "sample": "1"}


def test_rows_added_a_few_at_a_time_through_growth_equal_rows_laid_out_at_once():
    recs = np.concatenate([records()] * 5)  # hops and tuples past any small start
    kernel = recs.astype(events.JOURNEY_DTYPE)  # the compiled path's records; recs (native order): numpy's
    whole = journey_rows(recs, ctx(), PlaceIds())
    for parts in (kernel, recs):
        columns = JourneyColumns(records=1)  # grows on (almost) every add
        ids = PlaceIds()
        for i in range(0, len(parts), 3):
            columns.add(parts[i:i + 3], ctx(), ids)
        assert len(columns) == whole.num_rows
        assert columns.take().to_pylist() == whole.to_pylist()
    empty = JourneyColumns()
    empty.add(recs[recs["n_hops"] == 0], ctx(), PlaceIds())  # nothing with hops: nothing kept
    assert len(empty) == 0 and empty.take().num_rows == 0


def test_a_taken_table_is_not_written_over_by_later_rows():
    recs = records()
    columns = JourneyColumns(records=len(recs))
    ids = PlaceIds()
    columns.add(recs[:4], ctx(), ids)
    first = columns.take()
    expected = first.to_pylist()
    columns.add(recs[4:], ctx(), ids)
    columns.add(recs[:4][::-1].copy(), ctx(), ids)
    second = columns.take()
    assert first.to_pylist() == expected
    assert second.num_rows == len(recs) - 4 + 4 and second.column("packet_id").to_pylist()[-4:] == \
        recs["packet_id"][:4][::-1].tolist()


def test_the_writer_lays_records_out_as_they_are_added(tmp_path, monkeypatch):
    """One layout per add (the records are read once, as they come), none
    left for the flush; the capture holds the rows of every add in order."""
    calls = []
    real = journey_layout.layout_into
    monkeypatch.setattr(journey_layout, "layout_into", lambda recs, *a: (calls.append(len(recs)), real(recs, *a)))
    recs = records()
    path = tmp_path / "cap.arrows"
    with CaptureWriter(path, META, journeys=True) as w:
        for i in range(0, len(recs), 3):
            w.add_journeys(recs[i:i + 3], ctx())
        assert calls == [len(recs[i:i + 3]) for i in range(0, len(recs), 3)]
        w.flush()
    assert len(calls) == len(range(0, len(recs), 3))
    table = read_capture(str(path)).table
    ids = [p for p, k in zip(table.column("packet_id").to_pylist(), table.column("kind").to_pylist()) if k == "event"]
    assert list(dict.fromkeys(ids)) == list(dict.fromkeys(recs["packet_id"].tolist()))


def test_a_recorder_counts_the_distinct_flows_and_packets_of_journey_records(tmp_path):
    from types import SimpleNamespace

    from tests.unit.test_capture import FakeClock, _run_info
    from tracer.capture.recorder import Recorder
    from tracer.sinks import Batch, RunEnd

    recs = records()
    assert set(recs["flow_id"].tolist()) == {0, 5, 6}
    rec = Recorder(tmp_path / "cap.arrows", clock=FakeClock())
    rec.on_start(_run_info("journey"))
    rec.on_batch(Batch(arrived=recs[:3]))
    later = recs[3:].copy()
    later["flow_id"][-1] = 1 << 63  # a flow id past int64
    rec.on_batch(Batch(arrived=later, final=True))
    stats = rec.finish(RunEnd(SimpleNamespace(emitted={}, lost={})))
    assert stats["flows"] == 3  # 5, 6 and 1 << 63; 0 is no flow
    assert stats["packets"] == int(np.count_nonzero(recs["hops"]["code"][:, 0] & 0x80))
    assert read_capture(str(tmp_path / "cap.arrows")).stats["flows"] == 3
