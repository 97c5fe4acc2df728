"""Journey rows gathered pass by pass (tracer/journey_columns.py): the rows
of records added a few at a time, through the columns' growth, are the rows
of the same records laid out at once; a taken table is never written over;
the capture writer lays each add's records out as they come."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.test_decode import ctx
from tests.unit.test_journey_records import records
from tracer import events, journey_layout
from tracer.capture.reader import read_capture
from tracer.capture.writer import CaptureWriter
from tracer.journey_capture import PlaceIds, journey_rows
from tracer.journey_columns import JourneyColumns

META = {"host": "testhost", "kernel": "6.1.0", "version": "0", "command": "tracer record", "filter": "",
        "start_time": "2026-11-30T00:00:00Z", "ktime_offset_ns": "1000", "containers": "[]", "sample": "1"}


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


@pytest.mark.parametrize("at_once", [None, 2])
def test_a_recorder_counts_the_distinct_flows_and_packets_of_journey_records(tmp_path, monkeypatch, at_once):
    """Flow ids are taken a few passes at once (FLOWS_AT_ONCE) and at the
    end: the same count either way."""
    from types import SimpleNamespace

    from tests.unit.test_capture import FakeClock, _run_info
    from tracer.capture import recorder as recorder_module
    from tracer.capture.recorder import Recorder
    from tracer.sinks import Batch, RunEnd

    if at_once is not None:
        monkeypatch.setattr(recorder_module, "FLOWS_AT_ONCE", at_once)

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


@pytest.mark.parametrize("compiled", [True, False], ids=["kernel-dtype", "numpy"])
def test_a_failed_add_leaves_the_rows_held_before_it_whole(monkeypatch, compiled):
    """The layout writes its first offset (0) over the held rows' last one
    before it can fail (the compiled one: 'records changed while laid out',
    MemoryError): a failed add gives that offset back, so the table taken
    after it is valid and holds the rows of the adds that went through."""
    recs = records().astype(events.JOURNEY_DTYPE) if compiled else records()
    columns = JourneyColumns(records=len(recs))
    ids = PlaceIds()
    columns.add(recs[:4], ctx(), ids)
    real = journey_layout.layout_into

    def fails_midway(*args):
        real(*args)  # the offsets and columns written, then the failure
        raise RuntimeError("records changed while laid out")

    with monkeypatch.context() as patched:
        patched.setattr(journey_layout, "layout_into", fails_midway)
        with pytest.raises(RuntimeError):
            columns.add(recs[4:6], ctx(), ids)
    assert len(columns) == 4
    columns.add(recs[6:], ctx(), ids)
    table = columns.take()
    table.validate(full=True)
    kept = np.concatenate([recs[:4], recs[6:]])
    assert table.to_pylist() == journey_rows(kept, ctx(), PlaceIds()).to_pylist()
    failed_last = JourneyColumns(records=len(recs))
    failed_last.add(recs[:4], ctx(), ids)
    with monkeypatch.context() as patched:
        patched.setattr(journey_layout, "layout_into", fails_midway)
        with pytest.raises(RuntimeError):
            failed_last.add(recs[4:], ctx(), ids)
    last = failed_last.take()  # what a capture's close writes after the error
    last.validate(full=True)
    assert last.to_pylist() == journey_rows(recs[:4], ctx(), PlaceIds()).to_pylist()


def test_columns_give_back_what_a_burst_took_after_a_quiet_batch():
    """The next batch's columns are sized from what the last one used (a
    quarter more, never under the first size), not from the capacity a
    burst reached: kept through the burst's own take (the next batch may be
    a burst too), given back after a quiet one."""
    recs = records()
    burst = np.concatenate([recs] * 64)
    columns = JourneyColumns(records=len(recs))
    ids = PlaceIds()
    columns.add(recs, ctx(), ids)
    base = columns.nbytes
    columns.take()
    for _ in range(4):
        columns.add(burst, ctx(), ids)
    grown = columns.nbytes
    assert grown > 64 * base
    columns.take()
    columns.add(recs[:2], ctx(), ids)
    assert columns.nbytes > 32 * base, "kept through the burst's own take: the next batch may be a burst too"
    columns.take()  # a quiet batch: the burst's memory goes back
    assert columns.nbytes == 0
    columns.add(recs[1:3], ctx(), ids)
    assert columns.nbytes == base
    assert columns.take().column("packet_id").to_pylist() == recs["packet_id"][1:3].tolist()


def test_batches_that_grow_steadily_do_not_grow_their_columns_every_batch(monkeypatch):
    """Each batch a third larger than the last, laid out in a few passes:
    the next batch starts with the capacity the last one reached, so the
    columns grow (copying the rows held) about once per doubling, not in
    every batch (as when sized from a quarter more than the last one used)."""
    recs = records()
    columns = JourneyColumns(records=len(recs))
    ids = PlaceIds()
    grew = []
    fresh = JourneyColumns._fresh

    def counted(self, *sizes):
        grew.append(self._rec is not None and self.n > 0)  # a growth copies the rows held
        fresh(self, *sizes)

    monkeypatch.setattr(JourneyColumns, "_fresh", counted)
    per_pass = [4, 5, 7, 9, 12, 16, 21, 28, 37, 49]  # copies of recs a pass: a third more each batch
    growths = []
    for k in per_pass:
        del grew[:]
        for _ in range(3):
            columns.add(np.concatenate([recs] * k), ctx(), ids)
        growths.append(sum(grew))
        assert len(columns.take()) == 3 * k * len(recs)
    assert sum(growths[1:]) <= len(per_pass) // 2, growths


def test_columns_that_cannot_grow_keep_the_rows_held(monkeypatch):
    """Growing allocates every new column before it gives up the old ones:
    a MemoryError part way keeps the rows held (not new empty record
    columns beside the old hop columns, the rows' count at 0)."""
    import tracer.journey_columns as journey_columns

    recs = records()
    columns = JourneyColumns(records=4)
    ids = PlaceIds()
    columns.add(recs[:4], ctx(), ids)
    allocated = []

    class FailsAmongTheHops:
        def __getattr__(self, name):
            return getattr(np, name)

        @staticmethod
        def empty(*args, **kwargs):
            allocated.append(args)
            if len(allocated) == 30:  # past the record columns, among the hops'
                raise MemoryError
            return np.empty(*args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(journey_columns, "np", FailsAmongTheHops())
        with pytest.raises(MemoryError):
            columns.add(recs[4:], ctx(), ids)
    assert len(columns) == 4 and len(allocated) == 30
    table = columns.take()
    table.validate(full=True)
    assert table.to_pylist() == journey_rows(recs[:4], ctx(), PlaceIds()).to_pylist()


def test_an_add_says_how_many_packets_it_began_and_their_flows():
    """What `record` counts (packets, flows) comes from the rows an add
    stored: a record whose first hop gave its packet the id is a new
    packet (a continuation is not), a record without hops is not stored."""
    recs = np.concatenate([records()] * 2)
    recs["flow_id"] = 100 + np.arange(len(recs)) % 3
    recs["hops"]["code"][1::4, 0] &= 0x7F  # continuations: their first hop did not give the id
    recs["n_hops"][2] = 0
    kept = recs["n_hops"] > 0
    for parts in (recs.astype(events.JOURNEY_DTYPE), recs):  # compiled and numpy layouts
        columns = JourneyColumns(records=2)
        ids = PlaceIds()
        new, flows = 0, []
        for i in range(0, len(parts), 5):
            stored = columns.add(parts[i:i + 5], ctx(), ids)
            new += stored.new_packets
            flows += stored.flow_ids.tolist()
        assert new == int(np.count_nonzero(recs["hops"]["code"][kept, 0] & 0x80)) > 0
        assert new < int(kept.sum())
        assert flows == recs["flow_id"][kept].tolist()
