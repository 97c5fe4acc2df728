"""Version 5 captures: a row's hops hold only their times, each batch holds
its hop paths once (the `path` dictionary) and a row the last sighting's
time as its gap after its last hop (docs/capture-format.md). Read back, the
rows are the live ones; a path that is not its row's is refused in one line."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.unit.test_decode import ctx
from tests.unit.test_journey_capture import META, _rewrite, comparable, live_rows, write, write_around_a_container
from tests.unit.test_journey_records import records
from tracer import events
from tracer.capture.reader import read_capture
from tracer.capture.writer import CaptureWriter


def test_version_5_stores_neither_time_nor_a_hops_ifindex_nor_a_path_a_row_and_reads_them_back(tmp_path):
    """Since version 4 a file leaves out the columns another column says: no
    `time` (ktime_ns + the metadata's ktime_offset_ns, every row kind) and no
    hop `ifindex` (each place id is of one ifindex, in its `place` row);
    since version 5 a row's hops are only their times, the rest of them
    (their path) stored once a batch, and the last sighting's time is its
    gap after the last hop's. Readers put all back, so the rows read are
    the live ones."""
    recs = records()
    recs["last_ktime"][1] += 12_345  # a sighting after the last hop the record carries
    path = tmp_path / "cap.arrows"
    write(path, [recs[:3], recs[3:]])
    with pa.ipc.open_stream(str(path)) as reader:
        on_disk = reader.read_all()
    assert reader.schema.metadata[b"tracer.schema_version"] == b"5"
    assert "time" not in on_disk.schema.names and "last_ktime_ns" not in on_disk.schema.names
    assert on_disk.schema.field("hops").type.value_type.names == list(events.DT_PLANES)
    assert "ifindex" not in on_disk.schema.field("path").type.value_type.value_type.names
    journeys = on_disk.filter(pc.equal(on_disk["kind"], "journey"))
    # every row's path is as long as its hops
    assert pc.list_value_length(pa.chunked_array([c.dictionary_decode() for c in journeys["path"].chunks])) \
        .to_pylist() == pc.list_value_length(journeys["hops"]).to_pylist()
    gaps = journeys["last_gap_ns"].to_pylist()
    assert gaps.count(12_345) == 1 and set(gaps) == {0, 12_345}
    assert comparable(read_capture(str(path)).events) == comparable(live_rows(recs))
    from tracer.journey_capture import conform

    back = pa.Table.from_batches([conform(b, 0) for b in on_disk.to_batches()])
    back = back.filter(pc.equal(back["kind"], "journey"))
    assert back["last_ktime_ns"].to_pylist() == recs["last_ktime"][recs["n_hops"] > 0].tolist()
    # a batch holds each path once: the same records four times over hold their paths once
    again = tmp_path / "again.arrows"
    write(again, [np.concatenate([recs] * 4)])
    path_column = pa.ipc.open_stream(str(again)).read_all().column("path")
    (chunk,) = [c for c in path_column.chunks if len(c.dictionary)]
    assert len(chunk.dictionary) == len({str(p) for p in chunk.dictionary_decode().to_pylist() if p}) \
        == len({str(p) for p in path_column.chunk(0).dictionary.to_pylist()}) <= len(recs)
    places = [json.loads(i) for i in on_disk.filter(pc.equal(on_disk["kind"], "place"))["info"].to_pylist()]
    assert places and all(isinstance(p["ifindex"], int) for p in places)
    # a place id names one ifindex: the same interface name at two ifindexes is two places
    assert len({p["id"] for p in places}) == len({(p["ifindex"], p["ifname"], p["netns"]) for p in places})
    capture = read_capture(str(path))
    assert comparable(capture.events) == comparable(live_rows(recs))
    stats = capture.table.filter(pc.equal(capture.table["kind"], "stats"))
    offset = int(capture.metadata["ktime_offset_ns"])
    assert stats["time"].cast(pa.int64()).to_pylist() == [k + offset for k in stats["ktime_ns"].to_pylist()]


def test_unknown_or_huge_place_ids_in_version_5_paths_read_as_unknown_places(tmp_path):
    """The same damage in a version 5 file, whose hops' places are in its paths."""
    def damage(t):
        path = t.column("path").combine_chunks()
        listed = path.dictionary
        values = listed.values
        place = pa.array(np.full(len(values), 2**32 - 1, np.uint32))
        fields = [values.field(i) if f.name != "place" else place for i, f in enumerate(values.type)]
        broken = pa.ListArray.from_arrays(listed.offsets, pa.StructArray.from_arrays(fields, fields=list(values.type)))
        return t.set_column(t.schema.get_field_index("path"), "path",
                            pa.DictionaryArray.from_arrays(path.indices, broken))
    table = read_capture(_rewrite(tmp_path, damage)).events
    assert table.num_rows == int(records()["n_hops"].sum())
    assert set(table.column("ifname").to_pylist()) == {None}


@pytest.mark.parametrize("damage, message", [
    (lambda index, listed: (pa.array([len(listed)] * len(index), pa.int32()), listed), "not in its batch's paths"),
    (lambda index, listed: (index, pa.array([[]] * len(listed), listed.type)), "path and hops differ in length"),
])
def test_a_version_5_row_whose_path_is_not_its_hops_is_one_line(tmp_path, damage, message):
    """A row's path index past its batch's paths (which Arrow's own check
    of a batch read finds first: the capture reader stops there with a
    warning), or a path shorter than the row's hops: refused in one line,
    never laid out from a wrong hop."""
    from tracer.capture import CaptureReadError
    from tracer.journey_capture import conform

    def change(t):
        path = t.column("path").combine_chunks()
        indices, listed = damage(pc.fill_null(path.indices, 0), path.dictionary)
        mask = path.indices.is_null()
        broken = pa.DictionaryArray.from_arrays(pc.if_else(mask, pa.scalar(None, pa.int32()), indices), listed,
                                                safe=False)
        return t.set_column(t.schema.get_field_index("path"), "path", broken)
    path = tmp_path / "cap.arrows"
    write(path, [records()])
    (batch,) = change(pa.ipc.open_stream(str(path)).read_all()).combine_chunks().to_batches()
    with pytest.raises(events.ColumnError, match=message):
        conform(batch)
    if "length" in message:
        with pytest.raises(CaptureReadError, match=message) as err:
            read_capture(_rewrite(tmp_path, change))
        assert "\n" not in str(err.value)


def test_paths_numbered_by_place_ids_when_no_address_tells_places_apart(tmp_path):
    """The usual case (no two containers' eth0 at one ifindex): a batch's
    paths are the layout's, numbered by place index; the file reads as the
    live rows, and the same records again add no path."""
    recs = records()
    c = ctx()
    c.book.container_places[2] = c.book.container_places[2][:1]
    path = tmp_path / "cap.arrows"
    with CaptureWriter(path, META, journeys=True) as w:
        w.add_journeys(recs, c)
        w.add_journeys(recs, c)
    on_disk = pa.ipc.open_stream(str(path)).read_all()
    (chunk,) = [ch for ch in on_disk["path"].chunks if len(ch.dictionary)]
    distinct = {json.dumps(p) for p in chunk.dictionary.to_pylist()}
    assert len(distinct) == len(chunk.dictionary) <= len(recs)
    live = live_rows(recs, c)
    assert comparable(read_capture(str(path)).events) == comparable(pa.concat_tables([live, live]))


def test_small_journey_tables_in_one_batch_keep_their_own_paths(tmp_path, monkeypatch):
    """Journey tables too small for a batch of their own are written in one
    with the rows around them: each brought its own paths, and the batch's
    dictionary holds them one after the other."""
    import tracer.capture.writer as writer

    monkeypatch.setattr(writer, "JOURNEY_BATCH", 3)
    recs = records()
    path = tmp_path / "cap.arrows"
    assert write_around_a_container(path, recs).batches_written == 1
    assert comparable(read_capture(str(path)).events) == comparable(live_rows(recs))
