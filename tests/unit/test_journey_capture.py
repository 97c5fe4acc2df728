"""Captures of journey records (schema version 2): what the kernel emitted is
stored as one row per record, and reading it back gives exactly the sighting
rows live decoding gives for the same records, whatever the batching, the
rotation or the places learnt on the way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.unit.test_decode import ctx
from tests.unit.test_journey_records import records
from tracer import events
from tracer.capture.reader import read_capture
from tracer.capture.writer import CaptureWriter
from tracer.decode import decode
from tracer.expand import expand

META = {"host": "testhost", "kernel": "6.1.0", "version": "0", "command": "tracer record", "filter": "",
        "start_time": "2026-11-30T00:00:00Z", "ktime_offset_ns": "1000", "containers": "[]", "sample": "1"}


def live_rows(recs: np.ndarray, context=None) -> pa.Table:
    """What decoding the records live gives (the version 1 capture's rows),
    in ``context`` (test_decode's ctx() by default)."""
    return decode(expand(recs), context if context is not None else ctx())


def comparable(table: pa.Table) -> list[dict]:
    cols = [c for c in events.EVENT_SCHEMA.names]
    return table.select(cols).to_pylist()


def as_version_4(table: pa.Table) -> pa.Table:
    """A version 5 capture's own rows (read with pyarrow) as version 4
    stored them (a row's whole hops, `last_ktime_ns`; schema_version 4): for
    tests of what version 4 files hold, and of damage to it."""
    from tracer.journey_v5 import as_version_4

    meta = {**table.schema.metadata, b"tracer.schema_version": b"4"}
    old = pa.Table.from_batches([as_version_4(b) for b in table.to_batches()])
    schema = events.JOURNEY_FILE_SCHEMA_V4
    return old.select(schema.names).cast(schema).replace_schema_metadata(meta)


def write(path, batches, **kw) -> CaptureWriter:
    c = ctx()
    with CaptureWriter(path, META, journeys=True, **kw) as w:
        for recs in batches:
            w.add_journeys(recs, c)
            w.flush()
    return w


def test_journey_rows_read_back_as_their_sighting_rows(tmp_path):
    recs = records()
    recs["tcp_doff"] = 5 + np.arange(len(recs)) % 6  # every record field travels, not only what the helper sets
    recs["tcp_seq"], recs["tcp_ack"], recs["skb"] = 7 * np.arange(len(recs)), 1 << 31, 0xFFFF8880_0000_0000
    recs["fwd_out_ifindex"] = 9
    path = tmp_path / "cap.arrows"
    w = write(path, [recs[:3], recs[3:]])
    capture = read_capture(str(path))
    assert capture.metadata["schema_version"] == events.JOURNEY_SCHEMA_VERSION
    assert comparable(capture.events) == comparable(live_rows(recs))
    assert w.journey_rows == len(recs)
    assert w.event_rows == capture.events.num_rows == int(recs["n_hops"].sum())


def test_the_file_holds_one_row_per_record_and_each_place_once(tmp_path):
    recs = records()
    path = tmp_path / "cap.arrows"
    write(path, [recs[:3], recs[3:], recs])
    table = pa.ipc.open_stream(str(path)).read_all()
    kinds = table.column("kind").to_pylist()
    assert kinds.count("journey") == 2 * len(recs)
    places = [json.loads(i) for i, k in zip(table.column("info").to_pylist(), kinds) if k == "place"]
    assert len({p["id"] for p in places}) == len(places), "a place is written once per file"
    first_use = {}
    for row, k in enumerate(kinds):
        if k == "journey":
            for h in table.column("path")[row].as_py():
                first_use.setdefault(h["place"], row)
    place_rows = {json.loads(table.column("info")[r].as_py())["id"]: r for r, k in enumerate(kinds) if k == "place"}
    assert all(place_rows[p] < r for p, r in first_use.items()), "a place row comes before the rows that use it"
    hops = pc.list_flatten(pa.chunked_array([c.dictionary_decode() for c in table.column("path").chunks]))
    assert pc.max(pc.struct_field(hops, "hook")).as_py() < len(events.HOOKS)


def test_each_rotated_file_reads_on_its_own(tmp_path):
    recs = records()
    path = tmp_path / "cap.arrows"
    w = write(path, [recs[:4], recs[4:]], rotate_size=1)
    assert len(w.paths) == 2
    for part, expected in zip(w.paths, (recs[:4], recs[4:])):
        assert comparable(read_capture(str(part)).events) == comparable(live_rows(expected))


def test_more_hops_than_a_record_holds_are_cut_not_crashed(tmp_path):
    """A hand-made capture whose hop list is longer than MAX_HOPS reads as a
    record would hold it (the first MAX_HOPS hops)."""
    recs = records()[:1]
    path = tmp_path / "cap.arrows"
    write(path, [recs])
    table = as_version_4(pa.ipc.open_stream(str(path)).read_all())
    schema = table.schema
    rows = table.to_pylist()
    for row in rows:
        if row["kind"] == "journey":
            row["hops"] = row["hops"] * 4
    long = tmp_path / "long.arrows"
    with pa.ipc.new_stream(str(long), schema) as s:
        s.write_table(pa.Table.from_pylist(rows, schema=schema))
    events_read = read_capture(str(long)).events
    assert events_read.num_rows == events.MAX_HOPS


@pytest.mark.parametrize("column", ["hops", "path", "tuples", "end", "drop_reason"])
def test_null_columns_read_as_empty_not_a_traceback(tmp_path, column):
    recs = records()
    path = tmp_path / "cap.arrows"
    write(path, [recs])
    table = pa.ipc.open_stream(str(path)).read_all()
    i = table.schema.get_field_index(column)
    table = table.set_column(i, table.schema.field(column), pa.nulls(table.num_rows, table.schema.field(column).type))
    broken = tmp_path / "nulls.arrows"
    with pa.ipc.new_stream(str(broken), table.schema) as s:
        s.write_table(table)
    read_capture(str(broken)).events  # reads; what is missing is missing


def test_records_as_the_kernel_lays_them_out_and_as_numpy_reorders_them(tmp_path):
    """Kernel records keep ports in network byte order (events.JOURNEY_DTYPE);
    np.concatenate (the hold) gives them back in native order: both are stored alike."""
    native = records()
    kernel = native.astype(events.JOURNEY_DTYPE)
    assert kernel.dtype["tuples"].base["sport"].byteorder == ">" and native.dtype != kernel.dtype
    for recs, name in ((native, "native"), (kernel, "kernel")):
        path = tmp_path / f"{name}.arrows"
        write(path, [recs])
        assert comparable(read_capture(str(path)).events) == comparable(live_rows(native)), name


def test_a_strided_view_of_records_is_stored_alike(tmp_path):
    """The drain hands over views into its buffer, not always contiguous."""
    recs = records()
    doubled = np.repeat(recs, 2)[::2]
    assert not doubled.flags.c_contiguous
    path = tmp_path / "strided.arrows"
    write(path, [doubled])
    assert comparable(read_capture(str(path)).events) == comparable(live_rows(recs))


def _rewrite(tmp_path, change, version_4: bool = False) -> str:
    """A capture of records() with its rows changed (``version_4``: as
    version 4 stored them, and so marked)."""
    recs = records()
    path = tmp_path / "cap.arrows"
    write(path, [recs])
    reader = pa.ipc.open_stream(str(path))
    table = reader.read_all()
    table = as_version_4(table) if version_4 else table
    meta = table.schema.metadata
    table = change(table)
    out = tmp_path / "changed.arrows"
    with pa.ipc.new_stream(str(out), table.schema.with_metadata(meta)) as s:
        s.write_table(table)
    return str(out)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.drop_columns(["hops"]), "no 'hops' column"),
    (lambda t: t.set_column(t.schema.get_field_index("hops"), "hops", pa.array(["x"] * t.num_rows)), "column 'hops' is string"),
    (lambda t: t.set_column(t.schema.get_field_index("info"), "info",
                            pa.array(["{" if k == "place" else None for k in t.column("kind").to_pylist()])),
     "a place row's info is not a place"),
])
def test_broken_journey_columns_are_one_line(tmp_path, change, message):
    from tracer.capture import CaptureReadError

    path = _rewrite(tmp_path, change)
    with pytest.raises(CaptureReadError, match=message) as err:
        read_capture(path)
    assert "\n" not in str(err.value)


def test_a_missing_optional_column_reads_as_null(tmp_path):
    path = _rewrite(tmp_path, lambda t: t.drop_columns(["tcp_seq", "end"]))
    table = read_capture(path).events
    assert table.num_rows == int(records()["n_hops"].sum())
    assert set(table.column("tcp_seq").to_pylist()) == {0}


def test_records_added_a_few_at_a_time_keep_their_order_around_other_rows(tmp_path):
    """The writer gathers journey rows into tables (JOURNEY_BATCH or at the
    flush), but a row of another kind still comes after the records added
    before it and before those added after."""
    recs = records()
    path = tmp_path / "cap.arrows"
    c = ctx()
    with CaptureWriter(path, META, journeys=True) as w:
        for r in recs[:4]:
            w.add_journeys(r[None], c)
        w.add_row("container", 1, {"action": "start", "id": "x", "name": "x"})
        for r in recs[4:]:
            w.add_journeys(r[None], c)
        assert w.journey_rows == len(recs)
    table = read_capture(str(path)).table
    kinds = table.column("kind").to_pylist()
    packet_ids = table.column("packet_id").to_pylist()
    container_at = kinds.index("container")
    before = {p for p, k in zip(packet_ids[:container_at], kinds) if k == "event"}
    after = {p for p, k in zip(packet_ids[container_at:], kinds[container_at:]) if k == "event"}
    assert before == set(recs["packet_id"][:4].tolist()) and after == set(recs["packet_id"][4:].tolist())
    assert comparable(read_capture(str(path)).events) == comparable(live_rows(recs))


def write_around_a_container(path, recs: np.ndarray) -> CaptureWriter:
    """records[:4], a container row, the rest, then a flush."""
    with CaptureWriter(path, META, journeys=True) as w:
        w.add_journeys(recs[:4], ctx())
        w.add_row("container", 1, {"action": "start", "id": "x", "name": "x"})
        w.add_journeys(recs[4:], ctx())
        w.flush()
    return w


def test_big_journey_tables_are_batches_of_their_own_in_order(tmp_path, monkeypatch):
    """Journey rows laid out together are written as their own record batch
    (not copied into one with the rows around them): the file reads back
    the same rows in the same order, around a container row."""
    import tracer.capture.writer as writer

    monkeypatch.setattr(writer, "JOURNEY_BATCH", 2)
    monkeypatch.setattr(writer, "OWN_BATCH_ROWS", 2)
    recs = records()
    path = tmp_path / "cap.arrows"
    assert write_around_a_container(path, recs).batches_written >= 3
    table = read_capture(str(path)).table
    kinds = table.column("kind").to_pylist()
    at = kinds.index("container")
    ids = table.column("packet_id").to_pylist()
    assert set(ids[:at]) == set(recs["packet_id"][:4].tolist())
    assert set(ids[at + 1:]) - {None} == set(recs["packet_id"][4:].tolist())
    assert comparable(read_capture(str(path)).events) == comparable(live_rows(recs))


def test_added_records_are_laid_out_and_their_rows_outlive_later_adds(tmp_path, monkeypatch):
    """The writer lays records out as they are added (tracer/journey_columns.py):
    a caller may change its records after adding them, and rows taken as a
    table stay as they were when later records are laid out."""
    import tracer.capture.writer as writer

    monkeypatch.setattr(writer, "JOURNEY_BATCH", 3)  # a table every 3 records
    recs = records()
    path = tmp_path / "cap.arrows"
    with CaptureWriter(path, META, journeys=True) as w:
        for i in range(0, len(recs), 2):
            part = recs[i:i + 2].copy()
            w.add_journeys(part, ctx())
            part["packet_id"] = 0  # the caller's array, not the writer's copy
    assert comparable(read_capture(str(path)).events) == comparable(live_rows(recs))


def test_unknown_or_huge_place_ids_read_as_unknown_places(tmp_path):
    """A damaged file's place ids (none written, or 2^32-1) give hops at an
    unknown place, not a crash or an allocation the size of the id."""
    def damage(t):
        hops = t.column("hops").combine_chunks()
        values = hops.values
        place = pa.array(np.full(len(values), 2**32 - 1, np.uint32))
        fields = [values.field(i) if f.name != "place" else place for i, f in enumerate(values.type)]
        broken = pa.ListArray.from_arrays(hops.offsets, pa.StructArray.from_arrays(fields, fields=list(values.type)))
        return t.set_column(t.schema.get_field_index("hops"), "hops", broken)
    table = read_capture(_rewrite(tmp_path, damage, version_4=True)).events
    assert table.num_rows == int(records()["n_hops"].sum())
    assert set(table.column("ifname").to_pylist()) == {None}


def test_ipv6_addresses_are_stored_and_read_back(tmp_path):
    from tests.unit.test_journey_records import ip

    recs = records()
    recs["tuples"]["saddr"][0, 0] = ip("fd00:198:18::2")
    path = tmp_path / "v6.arrows"
    write(path, [recs])
    back = read_capture(str(path)).events
    assert comparable(back) == comparable(live_rows(recs))
    assert "fd00:198:18::2" in back["src_ip"].cast(pa.string()).to_pylist()


def test_captures_from_before_ipv6_still_read(tmp_path):
    """Version 2 captures written before addresses were 16 bytes hold IPv4
    addresses as uint32 in the tuples: they read as they did."""
    from tracer.addresses import text_of
    from tracer.journey_capture import _widened_tuples

    legacy_type = pa.list_(pa.struct([("saddr", pa.uint32()), ("daddr", pa.uint32()),
                                      ("sport", pa.uint16()), ("dport", pa.uint16())]))
    old = pa.array([[{"saddr": 0xC6120002, "daddr": 0xC6120001, "sport": 40000, "dport": 8000}], []], legacy_type)
    new = _widened_tuples(old.slice(0, 2))
    assert new.type == pa.list_(events.TUPLE_ROW_TYPE)
    first = new.to_pylist()[0][0]
    assert text_of(first["saddr"]) == "198.18.0.2" and text_of(first["daddr"]) == "198.18.0.1"
    assert first["dport"] == 8000 and new.to_pylist()[1] == []


def test_version_3_stores_dt_ns_as_its_bytes_and_reads_it_back(tmp_path):
    """Since version 3 (and in 4) a hop's dt_ns is four uint8 fields on disk
    (events.DT_PLANES); every reader sees dt_ns, whatever its size (a
    drop seconds after the first hop needs all four bytes)."""
    recs = records()
    dts = [0, 1000, 256_000, 65_536_000, 1_000_000_000, 4_294_967_000]  # every byte used; whole µs for comparable()
    recs["hops"]["dt_ns"][0, :6] = dts
    recs["last_ktime"][0] = recs["first_ktime"][0] + dts[-1]
    path = tmp_path / "cap.arrows"
    write(path, [recs])
    with pa.ipc.open_stream(str(path)) as reader:
        on_disk = reader.read_all()
    assert reader.schema.metadata[b"tracer.schema_version"] == events.JOURNEY_SCHEMA_VERSION.encode()
    assert on_disk.schema.field("hops").type.value_type.names[:4] == list(events.DT_PLANES)
    first = on_disk.filter(pc.equal(on_disk["kind"], "journey"))["hops"][0].as_py()
    assert [h["dt_ns_b0"] | h["dt_ns_b1"] << 8 | h["dt_ns_b2"] << 16 | h["dt_ns_b3"] << 24 for h in first] == dts
    assert comparable(read_capture(str(path)).events) == comparable(live_rows(recs))


def test_joining_dt_bytes_keeps_nulls_and_slices():
    """journey_capture.conform on hand-made version 3 hops: a null list, a
    null hop, null bytes, and a batch that is a slice of a longer one."""
    from tracer.journey_capture import conform

    dts = [0x01020304, 0xFFFFFFFF, 7, 1 << 31, 300]
    hop_type = events.HOP_FILE_TYPE_V3
    hops = [{**{n: (d >> (8 * i)) & 0xFF for i, n in enumerate(events.DT_PLANES)}, "hook": 1, "nat_stage": 0,
             "flags": 0, "ifindex": 7, "ttl": 64, "tuple": 0, "place": 0} for d in dts]
    hops[4]["dt_ns_b1"] = None  # a null byte reads as 0
    lists = pa.array([[hops[0], hops[1]], None, [hops[2], None], [hops[3], hops[4]]], pa.list_(hop_type))
    n = len(lists)
    columns = {"time": pa.array([0] * n, pa.timestamp("ns", tz="UTC")), "ktime_ns": pa.array([0] * n, pa.uint64()),
               "kind": pa.array(["journey"] * n).dictionary_encode(), "hops": lists,
               "tuples": pa.array([[]] * n, pa.list_(events.TUPLE_ROW_TYPE))}
    batch = pa.RecordBatch.from_pydict(columns).slice(1)
    got = conform(batch).column("hops").to_pylist()
    assert got[0] is None and got[1][1] is None
    assert [h["dt_ns"] for h in got[1][:1] + got[2]] == [7, 1 << 31, 300 & 0xFF]
    assert conform(batch).schema.field("hops").type == events.JOURNEY_CAPTURE_SCHEMA.field("hops").type


def test_writing_journey_rows_imports_neither_numpy_ma_nor_pandas(tmp_path):
    """`record`'s first flush used to import numpy.ma and pyarrow's pandas
    shim through pa.array (~15 ms of CPU inside the run)."""
    import subprocess
    import sys

    code = ("import sys; from tests.unit.test_journey_capture import write; from tests.unit.test_journey_records import records; "
            f"write({str(tmp_path / 'cap.arrows')!r}, [records()]); "
            "print('numpy.ma' in sys.modules, 'pandas' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "False"], done.stdout


DATA = Path(__file__).resolve().parent.parent / "data"


def test_a_version_3_capture_reads_as_it_did():
    """tests/data/journeys-v3.arrows was written by tracer's version 3
    writer (commit 0afae44) from this module's records (as the first test
    changes them; two batches, a container row between);
    journeys-v3.rows.json holds the sighting rows that tracer decoded live
    from the same records (time as ns): the file reads as those rows."""
    old = read_capture(str(DATA / "journeys-v3.arrows"))
    assert old.metadata["schema_version"] == "3"
    got = old.events.select(list(events.EVENT_SCHEMA.names))
    got = got.set_column(0, "time", got["time"].cast(pa.int64()))
    assert got.to_pylist() == json.loads((DATA / "journeys-v3.rows.json").read_text())
    assert [c["id"] for c in old.containers] == ["x"]


@pytest.mark.parametrize("version", ["4", "5"])
def test_a_version_4_or_5_capture_reads_as_it_did(version):
    """tests/data/journeys-v4.arrows was written by tracer's version 4
    writer (commit 40fe4ba) from this module's records (fwd_out_ifindex 9,
    two batches), journeys-v5.arrows by the version 5 writer (commit
    c2d2c52) from the same records alike; journeys-v4.rows.json holds the
    sighting rows that tracer's reader gave for the first then, which
    agreed with live decoding: a later format must still read both files
    as those rows."""
    old = read_capture(str(DATA / f"journeys-v{version}.arrows"))
    assert old.metadata["schema_version"] == version
    got = old.events.select(list(events.EVENT_SCHEMA.names))
    got = got.set_column(0, "time", got["time"].cast(pa.int64()))
    assert got.to_pylist() == json.loads((DATA / "journeys-v4.rows.json").read_text())
    recs = records()
    recs["fwd_out_ifindex"] = 9
    assert comparable(old.events) == comparable(live_rows(recs))


def test_a_version_4_file_without_its_clock_offset_is_refused_in_one_line(tmp_path):
    from tracer.capture import CaptureReadError

    path = tmp_path / "cap.arrows"
    write(path, [records()])
    with pa.ipc.open_stream(str(path)) as reader:
        table, schema = reader.read_all(), reader.schema
    meta = {k: v for k, v in schema.metadata.items() if k != b"tracer.ktime_offset_ns"}
    bad = tmp_path / "bad.arrows"
    with pa.OSFile(str(bad), "wb") as f, pa.ipc.new_stream(f, schema.with_metadata(meta)) as w:
        w.write_table(table)
    with pytest.raises(CaptureReadError, match="ktime_offset_ns"):
        read_capture(str(bad))


def _pyarrow_snippet() -> str:
    """docs/capture-format.md's "With pyarrow alone" code."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "capture-format.md").read_text()
    after = text.split("With **pyarrow** alone", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def hop_ifindexes(recs: np.ndarray) -> list[int]:
    """Each hop's device as the kernel's records have it, in file order
    (records without hops are not stored; a record holds MAX_HOPS at most)."""
    n = np.minimum(recs["n_hops"], events.MAX_HOPS)
    return [int(recs["hops"]["ifindex"][i, j]) for i in range(len(recs)) for j in range(n[i])]


def first_hop_times(recs: np.ndarray, offset: int) -> list[int]:
    """Each stored record's time as the live path has it: its first hop's
    ktime plus the decode context's clock offset."""
    return [int(r["first_ktime"]) + offset for r in recs if r["n_hops"]]


def run_snippet(path) -> dict:
    ns: dict = {}
    exec(compile(_pyarrow_snippet().replace('"capture.arrows"', repr(str(path))), "capture-format.md", "exec"), ns)
    return ns


@pytest.mark.parametrize("version", ["3", "4", "5"])
def test_the_documented_pyarrow_reading_gives_what_tracer_reads(tmp_path, version):
    """The pyarrow-only code of docs/capture-format.md, run on version 3
    and 4 captures (the fixtures, written from records()) and a version 5 one:
    each hop's ifindex, in order, is the kernel record's, each journey's
    time its first hop's on the live clock, and each hop's dt_ns gives the
    sighting times tracer's reader gives."""
    recs = records()
    if version == "3":
        path = DATA / "journeys-v3.arrows"
    elif version == "4":
        path = DATA / "journeys-v4.arrows"
        recs["fwd_out_ifindex"] = 9
    else:
        path = tmp_path / "cap.arrows"
        recs["fwd_out_ifindex"] = 9
        write(path, [recs[:3], recs[3:]])
    ns = run_snippet(path)
    events_read = read_capture(str(path)).events
    rows = ns["journeys"]
    dt = ns["dt_ns"].to_pylist()
    # the hops in file order; the reader's sighting rows of each journey: ktime_ns = first + dt (the last: last_ktime_ns)
    assert len(dt) == len(ns["ifindex"]) == events_read.num_rows
    assert list(ns["ifindex"]) == hop_ifindexes(recs)
    assert rows["time"].cast(pa.int64()).to_pylist() == first_hop_times(recs, ctx().boot_offset_ns)
    first = rows["ktime_ns"].to_pylist()
    assert sorted(first[i] + d for i, n in enumerate(pc.list_value_length(rows["hops"]).to_pylist())
                  for d in dt[sum(pc.list_value_length(rows["hops"]).to_pylist()[:i]):][:n]) \
        == sorted(k for k in events_read["ktime_ns"].to_pylist())


@pytest.mark.parametrize("rotate", [None, 1])
def test_one_place_at_two_ifindexes_and_an_ifindex_changing_place(tmp_path, rotate):
    """Version 4 ties each place id to one ifindex. Between batches the host
    renames: ifindex 9 (veth1) becomes the same place as ifindex 7
    (trc-host), so one place is seen at two ifindexes and one ifindex
    changes place; then 9 is veth1 again. Every hop still reads at its own
    ifindex and place, as live decoding named it then (one file, or a
    file per batch read together)."""
    from tests.unit.test_decode import HOST_NS

    recs = records()
    c = ctx()
    veth1, trc_host = c.book.places[(HOST_NS, 9)], c.book.places[(HOST_NS, 7)]
    live = []
    path = tmp_path / "cap.arrows"
    with CaptureWriter(path, META, journeys=True, rotate_size=rotate) as w:
        for book, part in ((veth1, recs[:4]), (trc_host, recs), (veth1, recs[4:])):
            c.book.places[(HOST_NS, 9)] = book
            w.add_journeys(part, c)
            w.flush()
            live.append(decode(expand(part), c))
    paths = [str(p) for p in w.paths]
    assert len(paths) == (3 if rotate else 1)
    capture = read_capture(paths)
    assert comparable(capture.events) == comparable(pa.concat_tables(live))
    sent = np.concatenate([recs[:4], recs, recs[4:]])
    assert capture.events["ifindex"].to_pylist() == hop_ifindexes(sent)
    # on disk: trc-host at two place ids (ifindex 7 and 9), ifindex 9 at two places
    stored = [json.loads(i) for p in paths for i, k in zip(*pa.ipc.open_stream(p).read_all().select(["info", "kind"])
                                                               .to_pydict().values()) if k == "place"]
    ifindexes_of = lambda place: {p["ifindex"] for p in stored if (p["ifname"], p["netns"]) == place}
    assert ifindexes_of(("trc-host", HOST_NS)) == {7, 9}
    assert {p["ifname"] for p in stored if p["ifindex"] == 9 and p["netns"] == HOST_NS} == {"trc-host", "veth1"}
    # and the documented pyarrow reading of each file agrees, hop by hop
    for p, part in zip(paths, (recs[:4], recs, recs[4:]) if rotate else (sent,)):
        assert list(run_snippet(p)["ifindex"]) == hop_ifindexes(part)


@pytest.mark.parametrize("journeys", [True, False])
def test_a_rows_time_is_its_ktime_plus_the_metadata_offset(tmp_path, journeys):
    """add_row takes no time of its own: every row's time is ktime_ns plus
    the metadata's ktime_offset_ns, stored so in a sighting-row file and
    computed so from a journey-row file."""
    path = tmp_path / "cap.arrows"
    with CaptureWriter(path, {**META, "ktime_offset_ns": "-250"}, journeys=journeys) as w:
        w.add_row("container", 5_000, {"action": "start", "id": "x", "name": "x"}, container_id="x")
        w.add_rule_rows([(6_000, 1, "nf_prerouting", {"table": "nat"})])
        w.add_row("stats", 7_000, {"events": {}, "lost": {}})
    table = read_capture(str(path)).table
    assert table["kind"].to_pylist() == ["container", "rule", "stats"]
    assert table["time"].cast(pa.int64()).to_pylist() == [4_750, 5_750, 6_750]


def test_a_journey_writer_needs_the_clock_offset_before_it_writes(tmp_path):
    """A version 4 file without ktime_offset_ns cannot be read (no time):
    the writer refuses to start one; a sighting-row writer refuses a row
    whose time it cannot give."""
    without = {k: v for k, v in META.items() if k != "ktime_offset_ns"}
    path = tmp_path / "cap.arrows"
    for bad in (without, {**META, "ktime_offset_ns": "12abc"}, {**META, "ktime_offset_ns": str(2**63)}):
        with pytest.raises(ValueError, match="ktime_offset_ns"):
            CaptureWriter(path, bad, journeys=True)
        assert not path.exists()
    with CaptureWriter(path, without) as w:
        with pytest.raises(ValueError, match="ktime_offset_ns"):
            w.add_row("stats", 7_000, {"events": {}, "lost": {}})


def test_a_recording_reads_back_on_the_clock_the_run_had(tmp_path):
    """The recorder writes the run's clock offset as the metadata's (the
    session makes it the decode context's, the live path's): a version 4
    recording reads back with the live rows' times, and its stats row at
    its ktime plus that offset."""
    from types import SimpleNamespace

    from tracer.capture.recorder import Recorder
    from tracer.sinks import Batch, RunEnd, RunInfo

    recs = records()
    c = ctx()
    c.boot_offset_ns = 1_796_000_000_123_456_000  # whole µs: comparable() reads times as datetimes
    run = RunInfo(describe="all", interfaces=1, records="journey", boot_offset_ns=c.boot_offset_ns, places=c,
                  now_ktime=lambda: 123_456)
    path = tmp_path / "rec.arrows"
    recorder = Recorder(path)
    recorder.check()
    recorder.on_start(run)
    recorder.on_batch(Batch(arrived=recs))
    recorder.finish(RunEnd(SimpleNamespace(emitted={"journey": len(recs)}, lost={"journey": 0})))
    capture = read_capture(str(path))
    assert comparable(capture.events) == comparable(decode(expand(recs), c))
    stats = capture.table.filter(pc.equal(capture.table["kind"], "stats"))
    assert stats["time"].cast(pa.int64()).to_pylist() == [123_456 + c.boot_offset_ns]


def test_dictionary_codes_that_move_between_batches_read_back(tmp_path):
    """A batch's dictionary columns reach the file in the stream's codes: as
    they are where the batch's codes are the stream's (most batches), else
    mapped (here `udp` is the stream's code 0 and the second batch's 1)."""
    recs = records()
    first, second = recs[:3].copy(), recs[3:].copy()
    first["protocol"] = 17
    second["protocol"] = np.where(np.arange(len(second)) % 2, 6, 17)
    path = tmp_path / "cap.arrows"
    write(path, [first, second])
    on_disk = pa.ipc.open_stream(str(path)).read_all()
    journeys = on_disk.filter(pc.equal(on_disk["kind"], "journey"))
    stored = np.concatenate([first, second])
    want = ["udp" if p == 17 else "tcp" for p in stored[stored["n_hops"] > 0]["protocol"]]
    assert journeys["protocol"].to_pylist() == want
    assert journeys["protocol"].chunks[-1].dictionary.to_pylist() == ["udp", "tcp"]  # the stream's order, not the batch's
    events_read = read_capture(str(path)).events
    assert sorted(set(events_read["protocol"].to_pylist())) == ["tcp", "udp"]
