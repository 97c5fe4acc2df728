"""Version 1-3 captures keep a row's wall clock in a `time` column; a damaged
file may lack it on a row. Such a row's time is computed as version 4
computes every row's, from its own file's ktime_offset_ns metadata: a
damaged offset there is one line on stderr and a non-zero exit from every
reading command (as version 4's: test_journey_capture_damage.py), never a
traceback (analysis_rows.wall_ns read it with a bare int()); a file whose
rows all have their time does not need the offset and reads as before."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.unit.test_capture import table_of
from tests.unit.test_capture import write as write_sightings
from tests.unit.test_journey_capture_damage import REPO, _commands, _refused, _tracer
from tracer.analysis_rows import wall_ns
from tracer.capture.reader import read_capture
from tracer.capture_clock import BadClock
from tracer.errors import TracerError

V3 = REPO / "tests" / "data" / "journeys-v3.arrows"


def _rewritten(src, out, offset: str | None, drop_time_at: list[int], drop_ktime_at: tuple[int, ...] = ()):
    """``src`` with its metadata's ktime_offset_ns set to ``offset`` (None:
    no such key) and the `time` of the rows at ``drop_time_at`` null (and
    the `ktime_ns` of those at ``drop_ktime_at``)."""
    with pa.ipc.open_stream(str(src)) as reader:
        table, meta = reader.read_all(), dict(reader.schema.metadata)
    meta.pop(b"tracer.ktime_offset_ns", None)
    if offset is not None:
        meta[b"tracer.ktime_offset_ns"] = offset.encode()
    for name, drop_at in (("time", drop_time_at), ("ktime_ns", drop_ktime_at)):
        i = table.schema.get_field_index(name)
        ty = table.schema.field(i).type
        values = table[name].cast(pa.int64()).to_pylist()
        for at in drop_at:
            values[at] = None
        table = table.set_column(i, table.schema.field(i), pa.array(values, pa.int64()).cast(ty))
    with pa.ipc.new_stream(str(out), table.schema.with_metadata(meta)) as s:
        s.write_table(table)
    return out


def _v1(tmp_path):
    path = tmp_path / "v1.arrows"
    write_sightings(path, [table_of(40, first_id=1)])
    return path


def _journey_rows_of_v3() -> list[int]:
    kinds = pa.ipc.open_stream(str(V3)).read_all()["kind"].to_pylist()
    return [i for i, k in enumerate(kinds) if k == "journey"]


@pytest.mark.parametrize("value, words", [("12abc", ["not an integer", "'12abc'"]),
                                          (str(2**63), ["out of range"])])
def test_a_bad_offset_where_a_v1_row_needs_it_is_one_line(tmp_path, value, words):
    path = _rewritten(_v1(tmp_path), tmp_path / "bad.arrows", value, [3])
    _refused(path, tmp_path, "tracer.ktime_offset_ns", str(path), *words)  # show, stats and the rest alike


def test_a_bad_offset_where_a_v3_journey_row_needs_it_is_one_line(tmp_path):
    path = _rewritten(V3, tmp_path / "bad.arrows", "12abc", _journey_rows_of_v3()[1::2])
    _refused(path, tmp_path, "tracer.ktime_offset_ns", "not an integer")


def test_a_row_without_time_takes_its_files_offset(tmp_path):
    """A v3 journey row and a v1 sighting without time read as ktime_ns +
    the offset (a v3 journey row without time was a NaN traceback)."""
    journeys = _journey_rows_of_v3()
    path = _rewritten(V3, tmp_path / "v3.arrows", "777", journeys[1::2])
    rows = read_capture(str(path)).events
    offset = pc.subtract(rows["time"].cast(pa.int64()), rows["ktime_ns"].cast(pa.int64()))
    stored = pa.ipc.open_stream(str(V3)).read_all()
    kept = stored.take(pa.array(journeys[::2]))
    assert 777 in offset.to_pylist()
    assert set(offset.to_pylist()) == {777} | set(pc.subtract(kept["time"].cast(pa.int64()),
                                                              kept["ktime_ns"].cast(pa.int64())).to_pylist())
    v1 = _rewritten(_v1(tmp_path), tmp_path / "v1-missing.arrows", "-5", [3])
    events = read_capture(str(v1)).events
    assert events["time"].null_count == 0
    assert events["time"].cast(pa.int64())[3].as_py() == events["ktime_ns"][3].as_py() - 5
    for p in (path, v1):
        for argv in _commands(p, tmp_path):
            done = _tracer(*argv)
            assert done.returncode == 0 and "Traceback" not in done.stderr, (argv, done.stderr[-2000:])


def test_a_bad_offset_no_row_needs_is_not_read(tmp_path):
    for src in (V3, _v1(tmp_path)):
        path = _rewritten(src, tmp_path / "unneeded.arrows", "12abc", [])
        for argv in _commands(path, tmp_path):
            done = _tracer(*argv)
            assert done.returncode == 0 and "Traceback" not in done.stderr, (argv, done.stderr[-2000:])


def test_wall_ns_checks_the_offset_it_needs():
    table = pa.table({"ktime_ns": pa.array([10, 20], pa.uint64()),
                      "time": pa.array([1010, None], pa.timestamp("ns", tz="UTC"))})
    assert wall_ns(table, {"ktime_offset_ns": "5"}).tolist() == [1010, 25]
    assert wall_ns(table, {}).tolist() == [1010, 20]  # no offset said: the ktime
    with pytest.raises(BadClock, match="not an integer") as caught:
        wall_ns(table, {"ktime_offset_ns": "1.5e9"})
    assert isinstance(caught.value, TracerError)  # the CLI prints it as one line
    assert wall_ns(table.slice(0, 1), {"ktime_offset_ns": "x"}).tolist() == [1010]  # not needed: not read
    neither = pa.table({"ktime_ns": pa.array([10, None], pa.uint64()),
                        "time": pa.array([1010, None], pa.timestamp("ns", tz="UTC"))})
    assert wall_ns(neither, {"ktime_offset_ns": "x"}).tolist() == [1010, 0]  # no ktime: the offset is of no use


def _same_reading(path, tmp_path) -> None:
    """Every reading command reads ``path``: show and stats agree on it."""
    for argv in _commands(path, tmp_path):
        done = _tracer(*argv)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (argv, done.stderr[-2000:])


def test_a_v1_file_without_an_offset_reads_a_row_without_time_as_its_ktime(tmp_path):
    """The v1 writer need not store ktime_offset_ns: such a file with a row
    without time reads (it was refused, saying falsely that it had no
    'time' column); that row's time is its plain ktime, as wall_ns's."""
    path = _rewritten(_v1(tmp_path), tmp_path / "v1-no-offset.arrows", None, [3])
    assert b"tracer.ktime_offset_ns" not in pa.ipc.open_stream(str(path)).schema.metadata
    events = read_capture(str(path)).events
    assert events["time"].null_count == 0
    assert events["time"].cast(pa.int64())[3].as_py() == events["ktime_ns"][3].as_py()
    assert wall_ns(events).tolist() == events["time"].cast(pa.int64()).to_pylist()
    _same_reading(path, tmp_path)


def test_a_row_without_time_or_ktime_needs_no_offset(tmp_path):
    """A row with neither cannot use the offset: a bad one is not read for
    it, by show or by stats (stats refused the file that show read)."""
    path = _rewritten(_v1(tmp_path), tmp_path / "v1-both-null.arrows", "12abc", [3], drop_ktime_at=(3,))
    _same_reading(path, tmp_path)
