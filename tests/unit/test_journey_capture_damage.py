"""Damaged version 4 captures through the command line: what version 4 no
longer stores (a row's `time`, a hop's `ifindex`) is computed on read from
the metadata and the place rows, so damage there must read as version 3
read it, or be refused in one line, never a traceback or made-up values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.unit.test_journey_capture import as_version_4, comparable, live_rows, write
from tests.unit.test_journey_records import records
from tracer.capture.reader import read_capture

REPO = Path(__file__).resolve().parents[2]


def _rewritten(tmp_path: Path, rows=None, meta=None) -> Path:
    """A version 4 capture of records() with its journey-row table changed by
    ``rows`` and its metadata by ``meta`` (dict -> dict), written anew."""
    path = tmp_path / "cap.arrows"
    write(path, [records()])
    with pa.ipc.open_stream(str(path)) as reader:
        table = as_version_4(reader.read_all())
    metadata = dict(table.schema.metadata)
    assert metadata[b"tracer.schema_version"] == b"4"
    table = rows(table) if rows else table
    metadata = meta(metadata) if meta else metadata
    out = tmp_path / "damaged.arrows"
    with pa.ipc.new_stream(str(out), table.schema.with_metadata(metadata)) as s:
        s.write_table(table)
    return out


def _first_journey_ktime(table: pa.Table, ktime: int) -> pa.Table:
    kt = table["ktime_ns"].to_pylist()
    at = table["kind"].to_pylist().index("journey")
    kt[at] = ktime
    return table.set_column(table.schema.get_field_index("ktime_ns"), "ktime_ns", pa.array(kt, pa.uint64()))


def _offset(value: str):
    return lambda meta: {**meta, b"tracer.ktime_offset_ns": value.encode()}


def _tracer(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tracer", *map(str, args)], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=120)


def _commands(path: Path, tmp_path: Path) -> list[list]:
    """Every reading command a damaged capture meets."""
    return [["stats", path], ["show", path], ["show", "--json", path], ["export", "--pcapng", tmp_path / "out.pcapng", path],
            ["export", "--parquet", tmp_path / "out.parquet", path], ["report", "-o", tmp_path / "out.html", path],
            ["sql", "SELECT count(*) AS n, min(ktime_ns) AS k FROM sightings", path]]


def _refused(path: Path, tmp_path: Path, *words: str) -> None:
    for argv in _commands(path, tmp_path):
        done = _tracer(*argv)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0, (argv, done.stdout[-500:])
        assert "Traceback" not in done.stderr and len(lines) == 1, (argv, done.stderr[-2000:])
        assert lines[0].startswith("tracer: error:"), (argv, lines)
        for word in words:
            assert word in lines[0], (argv, word, lines[0])


# --- finding 1: the computed time wraps as the writer did --------------------------


def _wrapped(ktime: int, offset: int) -> int:
    """ktime + offset in 64 bits, signed: what version 3's writers stored
    (its journey_layout.py: int64 numpy; its native/journey_layout.c: (int64_t)(u64 + u64))."""
    total = (ktime + offset) & (2**64 - 1)
    return total - 2**64 if total >= 2**63 else total


@pytest.mark.parametrize("ktime, offset", [
    (2**64 - 5, "1000"),  # a damaged ktime_ns
    (None, str(2**63 - 1)),  # the largest offset the metadata may hold
    (2**63, str(-(2**63))),  # the smallest
])
def test_an_overflowing_time_reads_as_version_3_stored_it(tmp_path, ktime, offset):
    path = _rewritten(tmp_path, rows=(lambda t: _first_journey_ktime(t, ktime)) if ktime is not None else None,
                      meta=_offset(offset))
    capture = read_capture(str(path))
    journeys = pa.ipc.open_stream(str(path)).read_all()
    journeys = journeys.filter(pc.equal(journeys["kind"], "journey"))
    first = journeys["ktime_ns"][0].as_py()
    # the first journey's first sighting: its row's time, as version 3 stored it
    assert capture.events["time"].cast(pa.int64())[0].as_py() == _wrapped(first, int(offset))
    rows = capture.table.filter(pc.is_valid(capture.table["ktime_ns"]))
    assert rows["time"].cast(pa.int64()).to_pylist() == [_wrapped(k, int(offset)) for k in rows["ktime_ns"].to_pylist()]
    for argv in _commands(path, tmp_path):
        done = _tracer(*argv)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (argv, done.stderr[-2000:])
        assert "Warning" not in done.stderr, (argv, done.stderr[-2000:])  # numpy's scalar overflow warning, say


@pytest.mark.parametrize("value, words", [
    (str(2**63), ["out of range", str(2**63)]),
    (str(-(2**63) - 1), ["out of range"]),
    ("1" + "0" * 30, ["out of range"]),
    # finding 3: present but not a number is not "missing"
    ("12abc", ["not an integer", "'12abc'"]),
    ("1.7e18", ["not an integer", "'1.7e18'"]),
    ("", ["not an integer"]),
])
def test_a_bad_clock_offset_is_one_line_saying_what_is_wrong(tmp_path, value, words):
    path = _rewritten(tmp_path, meta=_offset(value))
    _refused(path, tmp_path, "tracer.ktime_offset_ns", *words)


def test_a_missing_clock_offset_still_says_it_is_missing(tmp_path):
    path = _rewritten(tmp_path, meta=lambda m: {k: v for k, v in m.items() if k != b"tracer.ktime_offset_ns"})
    _refused(path, tmp_path, "no tracer.ktime_offset_ns")


def test_a_version_3_capture_needs_no_clock_offset(tmp_path):
    """Version 3 stores `time`: a damaged offset there is not read, so not refused."""
    src = REPO / "tests" / "data" / "journeys-v3.arrows"
    with pa.ipc.open_stream(str(src)) as reader:
        table, metadata = reader.read_all(), dict(reader.schema.metadata)
    out = tmp_path / "v3.arrows"
    with pa.ipc.new_stream(str(out), table.schema.with_metadata({**metadata, b"tracer.ktime_offset_ns": b"12abc"})) as s:
        s.write_table(table)
    assert read_capture(str(out)).events.num_rows == read_capture(str(src)).events.num_rows


# --- finding 2: a version 4 place row must say its ifindex ----------------------------


def _without_place_ifindex(table: pa.Table) -> pa.Table:
    infos = []
    for kind, info in zip(table["kind"].to_pylist(), table["info"].to_pylist()):
        if kind == "place":
            info = json.dumps({k: v for k, v in json.loads(info).items() if k != "ifindex"})
        infos.append(info)
    return table.set_column(table.schema.get_field_index("info"), "info", pa.array(infos, pa.string()))


def test_version_4_place_rows_without_ifindex_are_refused_in_one_line(tmp_path):
    """Every hop would read at ifindex 0, a real value too (a drop without a
    device): refused rather than shown as if recorded."""
    _refused(_rewritten(tmp_path, rows=_without_place_ifindex), tmp_path, "place row", "ifindex")


def test_a_hop_whose_place_has_no_row_still_reads_at_ifindex_0(tmp_path):
    """What the refusal is not: a hop pointing past the place rows (damage
    the reader already reads as an unknown place) keeps reading."""
    def unknown_places(t):
        hops = t.column("hops").combine_chunks()
        values = hops.values
        place = pa.array(np.full(len(values), 1 << 20, np.uint32))
        fields = [place if f.name == "place" else values.field(i) for i, f in enumerate(values.type)]
        new = pa.ListArray.from_arrays(hops.offsets, pa.StructArray.from_arrays(fields, fields=list(values.type)))
        return t.set_column(t.schema.get_field_index("hops"), "hops", new)
    got = read_capture(str(_rewritten(tmp_path, rows=unknown_places))).events
    assert got.num_rows == int(records()["n_hops"].sum())
    assert set(got["ifindex"].to_pylist()) == {0}


# --- the undamaged file, for contrast ----------------------------------------------------


def test_the_undamaged_capture_reads_as_live(tmp_path):
    path = _rewritten(tmp_path)
    assert comparable(read_capture(str(path)).events) == comparable(live_rows(records()))
    assert read_capture(str(path)).metadata["schema_version"] == "4"
