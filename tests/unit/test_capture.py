"""Capture files without root: synthetic raw events decoded as the live path
does, written with CaptureWriter/Recorder, read back with read_capture and
`tracer show`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from tracer import addresses, events
from tracer.capture import CaptureReadError
from tracer.capture.reader import read_capture
from tracer.capture.recorder import Recorder
from tracer.sinks import Batch, RunEnd, RunInfo
from tracer.capture.writer import CaptureWriter, parse_size, part_path, schema_with_metadata
from tracer.decode import DecodeContext, decode
from tracer.places import Place
from tracer.errors import TracerError
from tracer.journeys import build_journeys

REPO = Path(__file__).resolve().parents[2]
HOST_NS, CT_NS = 4026531840, 4026532500
OFFSET = 1_700_000_000_000_000_000
CLIENT, HOST, CONTAINER = "198.18.0.2", "198.18.0.1", "172.17.0.2"
META = {"host": "testhost", "filter": "port 8000", "command": "tracer record -w x",
        "ktime_offset_ns": "0"}


def _ip(text: str) -> np.ndarray:
    """The 16 bytes the kernel records (IPv4-mapped for IPv4)."""
    return np.frombuffer(addresses.packed(text), np.uint8)


def context() -> DecodeContext:
    places = {
        (HOST_NS, 2): Place("veth-lab-h", "external", HOST_NS),
        (HOST_NS, 3): Place("docker0", "bridge", HOST_NS),
        (HOST_NS, 9): Place("veth3f2a1b", "veth", HOST_NS, "c0ffee" * 10, "web"),
    }
    ctx = DecodeContext(host_netns=HOST_NS, boot_offset_ns=OFFSET)
    ctx.book.places = places
    ctx.book.container_places = {4: [(Place("eth0", "container", CT_NS, "c0ffee" * 10, "web"), (CONTAINER,))]}
    return ctx


# (hook, nat_stage, ifindex, flags, dnat applied)
_PATH = [
    ("tc_ingress", None, 2, 0, False),
    ("nf_prerouting", "before", 2, 0, False),
    ("nf_prerouting", "after", 2, 0, True),
    ("nf_forward", "before", 2, 0, True),
    ("nf_postrouting", "before", 3, 0, True),
    ("tc_egress", None, 3, 0, True),
    ("tc_egress", None, 9, 0, True),
    ("tc_ingress", None, 4, events.FLAG_IN_CONTAINER_NS, True),
]


def raw_packets(n: int, first_id: int = 1, t0: int = 10_000_000_000, client_port: int = 40000, dst_ip: str = CONTAINER) -> np.ndarray:
    """n inbound SYNs along the lab path, one sighting per hop, in time order."""
    raw = events.empty_raw(n * len(_PATH))
    i = 0
    for p in range(n):
        for h, (hook, stage, ifindex, flags, dnat) in enumerate(_PATH):
            r = raw[i]
            r["ktime_ns"] = t0 + p * 1_000_000 + h * 3_000 + (p * 7919) % 997
            r["packet_id"] = first_id + p
            r["flow_id"] = 0xFFFF888012345600 + 0x100 * p if hook.startswith("nf_") else 0
            r["hook"] = events.HOOKS.index(hook)
            r["nat_stage"] = events.NAT_STAGES.index(stage)
            r["direction"] = events.DIRECTIONS.index("original") if hook.startswith("nf_") else 0
            r["ifindex"] = ifindex
            r["netns"] = HOST_NS if not flags else 0
            r["flags"] = flags | (events.FLAG_NEW_PACKET if h == 0 else 0)
            r["protocol"] = 6
            r["src_ip"] = _ip(CLIENT)
            r["dst_ip"] = _ip(dst_ip if dnat else HOST)
            r["src_port"] = client_port + p
            r["dst_port"] = 8080 if dnat else 8000
            r["ip_id"] = p
            r["length"] = 60
            r["ttl"] = 64 - (h >= 4)
            r["tcp_flags"] = 0x02
            r["tcp_seq"] = (1_000_003 * p + 17) % (1 << 32)
            r["cpu"] = p % 4
            i += 1
    return raw


def table_of(n: int, **kw) -> pa.Table:
    return decode(raw_packets(n, **kw), context())


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, tables: list[pa.Table], clock: FakeClock | None = None, close: bool = True, **kw) -> CaptureWriter:
    """One flushed batch per table (the fake clock moves a second between them)."""
    clock = clock or FakeClock()
    w = CaptureWriter(path, META, clock=clock, **kw)
    for t in tables:
        w.add_events(t)
        clock.now += 1.0
        w.tick()
    if close:
        w.close()
    return w


def rows(table: pa.Table) -> list[dict]:
    """Row dicts with time as int ns (datetime has no nanoseconds)."""
    i = table.schema.get_field_index("time")
    return table.set_column(i, "time", table["time"].cast(pa.int64())).to_pylist()


# --- round trip ------------------------------------------------------------------


def test_round_trip_keeps_every_event_and_order(tmp_path):
    tables = [table_of(3), table_of(5, first_id=100, t0=20_000_000_000), table_of(2, first_id=200, t0=30_000_000_000)]
    w = write(tmp_path / "cap.arrows", tables)
    assert w.batches_written == 3 and w.paths == [tmp_path / "cap.arrows"]
    cap = read_capture([str(tmp_path / "cap.arrows")])
    assert cap.recovered == []
    assert cap.table.schema.equals(events.CAPTURE_SCHEMA, check_metadata=False)
    assert cap.events.schema.equals(events.EVENT_SCHEMA, check_metadata=False)
    assert rows(cap.events) == rows(pa.concat_tables(tables))
    assert set(cap.table["kind"].to_pylist()) == {"event"}
    assert cap.table["info"].null_count == cap.table.num_rows
    assert cap.stats is None
    # time is the ktime plus the offset that decoding used
    first = rows(cap.events.slice(0, 1))[0]
    assert first["time"] == first["ktime_ns"] + OFFSET


def test_journeys_from_a_capture_equal_those_of_the_live_tables(tmp_path):
    tables = [table_of(4), table_of(4, first_id=50, t0=11_000_000_000)]
    write(tmp_path / "cap.arrows", tables)
    replayed = build_journeys(read_capture(str(tmp_path / "cap.arrows")).events)
    live = build_journeys(pa.concat_tables(tables))
    assert [j.to_json_dict() for j in replayed] == [j.to_json_dict() for j in live]
    assert len(replayed) == 8 and replayed[0].container == "web"


def test_dictionaries_grow_as_deltas_not_replacements(tmp_path):
    # each batch brings addresses and ports the previous ones did not have
    tables = [table_of(2, dst_ip=f"172.17.0.{i}", first_id=10 * i, t0=i * 10**9) for i in range(2, 6)]
    write(tmp_path / "cap.arrows", tables)
    with pa.ipc.open_stream(str(tmp_path / "cap.arrows")) as reader:
        batches = list(reader)
        st = reader.stats
    assert st.num_record_batches == 4
    assert st.num_dictionary_deltas > 0
    assert st.num_replaced_dictionaries == 0
    # the last batch's dictionary holds every address seen so far
    dst = batches[-1].column("dst_ip").dictionary.to_pylist()
    assert {"172.17.0.2", "172.17.0.5", HOST} <= set(dst)
    assert read_capture(str(tmp_path / "cap.arrows")).events["dst_ip"].to_pylist() == pa.concat_tables(tables)["dst_ip"].to_pylist()


def test_zstd_compressed(tmp_path):
    write(tmp_path / "cap.arrows", [table_of(50)])
    raw = (tmp_path / "cap.arrows").read_bytes()
    uncompressed = pa.BufferOutputStream()
    with pa.ipc.new_stream(uncompressed, events.CAPTURE_SCHEMA) as s:
        s.write_table(read_capture(str(tmp_path / "cap.arrows")).table)
    assert len(raw) < uncompressed.getvalue().size / 3


def test_flushes_within_a_second_not_on_every_add(tmp_path):
    clock = FakeClock()
    w = CaptureWriter(tmp_path / "cap.arrows", META, clock=clock)
    clock.now += 30  # a quiet spell: the next rows still wait to be batched
    w.add_events(table_of(1))
    clock.now += 0.5
    w.tick()
    assert w.bytes_written == 0 and w.batches_written == 0  # buffered
    w.add_events(table_of(1, first_id=9))
    clock.now += 0.5  # the first rows are a second old now
    w.tick()
    assert w.bytes_written > 0 and w.batches_written == 1
    # a killed writer: what was flushed is readable
    cap = read_capture(str(tmp_path / "cap.arrows"))
    assert cap.events.num_rows == 2 * len(_PATH)
    assert "not stopped cleanly" in cap.recovered[0]
    w.close()


# --- files ---------------------------------------------------------------------


def test_file_mode_0600_even_over_an_existing_file(tmp_path):
    old = tmp_path / "cap.arrows"
    old.write_text("old capture")
    os.chmod(old, 0o644)
    write(old, [table_of(1)])
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    assert read_capture(str(old)).events.num_rows == len(_PATH)


def test_rotation_by_size_numbered_files_each_complete(tmp_path):
    w = write(tmp_path / "cap.arrows", [table_of(20, first_id=100 * i, t0=i * 10**9) for i in range(4)], rotate_size=1)
    names = [p.name for p in w.paths]
    assert names == ["cap.0000.arrows", "cap.0001.arrows", "cap.0002.arrows", "cap.0003.arrows"]
    assert not (tmp_path / "cap.arrows").exists()
    for p in w.paths:
        one = read_capture(str(p))
        assert one.events.num_rows == 20 * len(_PATH) and one.recovered == []
        assert one.metadata["host"] == "testhost" and one.metadata["schema_version"] == events.SCHEMA_VERSION
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    every = read_capture([str(p) for p in w.paths])
    assert every.events.num_rows == 80 * len(_PATH)
    assert every.events["packet_id"].to_pylist() == sorted(every.events["packet_id"].to_pylist())


def test_rotation_by_size_waits_for_the_size(tmp_path):
    w = write(tmp_path / "cap.arrows", [table_of(20, first_id=100 * i) for i in range(6)], rotate_size=parse_size("1M"))
    assert [p.name for p in w.paths] == ["cap.0000.arrows"]


def test_rotation_by_time_with_a_fake_clock(tmp_path):
    clock = FakeClock()
    w = CaptureWriter(tmp_path / "cap.arrows", META, clock=clock, rotate_seconds=10)
    for second in range(25):  # one packet a second for 25 s
        w.add_events(table_of(1, first_id=second + 1, t0=(second + 1) * 10**9))
        clock.now += 1.0
        w.tick()
    w.close()
    assert [p.name for p in w.paths] == ["cap.0000.arrows", "cap.0001.arrows", "cap.0002.arrows"]
    counts = [read_capture(str(p)).events.num_rows // len(_PATH) for p in w.paths]
    assert sum(counts) == 25 and counts[0] in (10, 11) and counts[1] in (10, 11)


def test_no_file_without_a_batch_after_rotation(tmp_path):
    clock = FakeClock()
    w = CaptureWriter(tmp_path / "cap.arrows", META, clock=clock, rotate_seconds=1)
    w.add_events(table_of(1))
    clock.now += 5
    w.tick()
    clock.now += 5
    w.tick()  # quiet: no new, empty file
    w.close()
    assert [p.name for p in w.paths] == ["cap.0000.arrows"]


def test_part_path_and_sizes():
    assert part_path("/x/cap.arrows", 3) == Path("/x/cap.0003.arrows")
    assert part_path("cap", 12) == Path("cap.0012")
    assert parse_size("10M") == 10 << 20 and parse_size("1G") == 1 << 30
    assert parse_size("512k") == 512 << 10 and parse_size("4096") == 4096 and parse_size("2MiB") == 2 << 20
    for bad in ("", "M", "10X", "-1M", "0"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_unwritable_path_is_a_tracer_error(tmp_path):
    with pytest.raises(TracerError, match="cannot write"):
        CaptureWriter(tmp_path / "no" / "such" / "dir.arrows", META)
    with pytest.raises(TracerError, match="no directory"):
        Recorder(tmp_path / "nope" / "x.arrows").check()


# --- torn tails ----------------------------------------------------------------


def test_torn_tail_keeps_previous_batches_and_warns(tmp_path):
    path = tmp_path / "cap.arrows"
    clock = FakeClock()
    w = CaptureWriter(path, META, clock=clock)
    sizes = []
    for i in range(3):
        w.add_events(table_of(10, first_id=100 * i, t0=(i + 1) * 10**9))
        clock.now += 1
        w.tick()
        sizes.append(w.bytes_written)
    # killed mid-write of the third batch: cut it in half
    os.truncate(path, (sizes[1] + sizes[2]) // 2)
    cap = read_capture(str(path))
    assert cap.events.num_rows == 20 * len(_PATH)
    assert cap.recovered == [f"{path}: recovered 2 batches ({20 * len(_PATH)} rows); file ends in a torn batch"]
    # a cut inside the next message's length prefix is torn too
    os.truncate(path, sizes[1] + 3)
    cap = read_capture(str(path))
    assert cap.events.num_rows == 20 * len(_PATH) and "torn" in cap.recovered[0]


def test_torn_middle_file_of_a_rotation_still_reads_the_others(tmp_path):
    w = write(tmp_path / "cap.arrows", [table_of(5, first_id=10 * i) for i in range(3)], rotate_size=1)
    first = w.paths[0]
    os.truncate(first, first.stat().st_size - 4)  # killed while ending the stream
    cap = read_capture([str(p) for p in w.paths])
    assert cap.events.num_rows == 15 * len(_PATH)
    assert len(cap.recovered) == 1 and cap.recovered[0].startswith(f"{first}: recovered 1 batches")
    # a file that lost its only batch is an error, not silently skipped
    os.truncate(first, first.stat().st_size - 40)
    with pytest.raises(CaptureReadError, match="no complete record batch"):
        read_capture([str(p) for p in w.paths])


# --- the recorder as a run's sink (tracer/sinks.py), without a session ---------------------


def _container(name="web", cid="c0ffee" * 10):
    published = (SimpleNamespace(host_ip="0.0.0.0", host_port=8000, container_port=8080, proto="tcp"),)
    return SimpleNamespace(id=cid, name=name, ips=(CONTAINER,), published=published, netns_inode=CT_NS, host_veth="veth3f2a1b")


class FakeKernelClock:
    def __init__(self) -> None:
        self.ktime = 50_000_000_000

    def __call__(self) -> int:
        self.ktime += 1000
        return self.ktime


def _run_info(records: str = "event") -> RunInfo:
    ctx = context()
    return RunInfo(describe="port 8000", interfaces=3, records=records, boot_offset_ns=ctx.boot_offset_ns,
                   containers=lambda: [_container()], sample=1, places=ctx, now_ktime=FakeKernelClock())


def test_recorder_metadata_container_rows_and_stats(tmp_path):
    clock = FakeClock()
    run = _run_info()
    rec = Recorder(tmp_path / "cap.arrows", clock=clock)
    rec.check()
    rec.on_start(run)
    rec.on_batch(Batch(arrived=table_of(3)))
    rec.on_containers("start", _container("db", "dbdbdb" * 10), run.now_ktime())  # from the Docker thread
    clock.now += 1.5
    rec.on_batch(Batch())  # writes the queued container row
    rec.on_batch(Batch(arrived=table_of(2, first_id=50), final=True))
    rec.on_containers("die", _container("db", "dbdbdb" * 10), run.now_ktime())
    counters = SimpleNamespace(emitted={"tc": 20, "netfilter": 20, "drop": 0}, lost={"tc": 0, "netfilter": 3, "drop": 0})
    stats = rec.finish(RunEnd(counters))

    cap = read_capture(str(tmp_path / "cap.arrows"))
    assert cap.recovered == []
    assert set(cap.metadata) == set(events.META_KEYS)
    assert cap.metadata["ktime_offset_ns"] == str(OFFSET)
    assert cap.metadata["filter"] == "port 8000" and cap.metadata["sample"] == "1"
    assert json.loads(cap.metadata["containers"])[0]["published"][0]["host_port"] == 8000
    assert cap.metadata["start_time"].endswith("Z")

    assert cap.table["kind"].to_pylist() == ["event"] * 24 + ["container"] + ["event"] * 16 + ["container", "stats"]
    assert [c["action"] for c in cap.containers] == ["start", "die"]
    start = rows(cap.table.filter(pa.compute.equal(cap.table["kind"], "container")).slice(0, 1))[0]
    assert start["container_name"] == "db" and start["container_id"] == "dbdbdb" * 10
    assert start["time"] == start["ktime_ns"] + OFFSET and start["packet_id"] is None

    assert cap.stats == stats
    assert stats["lost"] == {"tc": 0, "netfilter": 3, "drop": 0}
    assert stats["events"]["tc"] == 20 and stats["event_rows"] == 40
    assert stats["packets"] == 5 and stats["flows"] == 3 and stats["duration_s"] == 1.5
    assert cap.events.num_rows == 40


def test_recorder_has_enough_at_its_count(tmp_path):
    """`record -c N`: the recorder says so once N packets are in the capture."""
    rec = Recorder(tmp_path / "cap.arrows", count=5)
    rec.on_start(_run_info())
    assert rec.on_batch(Batch(arrived=table_of(3))) is False
    assert rec.on_batch(Batch(arrived=table_of(2, first_id=50))) is True
    rec.close()


# --- bad input: one line, non-zero exit ------------------------------------------------


def _show(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tracer", "show", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    good = tmp / "good.arrows"
    write(good, [table_of(3)])
    # killed while writing its first dictionaries/batch, after the schema
    size_of_schema = schema_with_metadata(META).serialize().size
    truncated = tmp / "truncated.arrows"
    truncated.write_bytes(good.read_bytes()[: size_of_schema + 100])
    header_only = tmp / "header.arrows"
    header_only.write_bytes(good.read_bytes()[:40])
    empty = tmp / "empty.arrows"
    empty.write_bytes(b"")
    text = tmp / "notes.arrows"
    text.write_text("GET / HTTP/1.1\r\nHost: example\r\n\r\n")
    future = tmp / "v9.arrows"
    meta = schema_with_metadata({**META, "schema_version": "9.0"})
    with pa.ipc.new_stream(str(future), meta) as s:
        s.write_table(read_capture(str(good)).table)
    plain = tmp / "plain.arrows"
    with pa.ipc.new_stream(str(plain), pa.schema([("x", pa.int64())])) as s:
        s.write_table(pa.table({"x": [1, 2]}))
    return {
        "missing": (tmp / "nope.arrows", "no such file"),
        "empty": (empty, "empty file"),
        "truncated": (truncated, "truncated"),
        "header": (header_only, "truncated"),
        "text": (text, "not an Arrow IPC stream"),
        "version": (future, "incompatible"),
        "plain": (plain, "not a tracer capture"),
        "directory": (tmp, "directory"),
    }


def test_bad_input_raises_capture_read_error(tmp_path):
    for name, (path, message) in _bad_files(tmp_path).items():
        with pytest.raises(CaptureReadError, match=message):
            read_capture([str(path)])
    assert issubclass(CaptureReadError, TracerError)


def test_bad_input_via_cli_is_one_line_nonzero_exit(tmp_path):
    for name, (path, message) in _bad_files(tmp_path).items():
        done = _show(str(path))
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0, name
        assert len(lines) == 1 and message in lines[0] and lines[0].startswith("tracer: error:"), (name, done.stderr)
        assert "Traceback" not in done.stderr and done.stdout == ""


# --- tracer show ---------------------------------------------------------------


def test_show_json_matches_build_journeys_and_filters_after_the_fact(tmp_path):
    path = tmp_path / "cap.arrows"
    tables = [table_of(3), table_of(2, first_id=50, client_port=50000, t0=20 * 10**9)]
    write(path, tables)
    done = _show("--json", str(path))
    assert done.returncode == 0, done.stderr
    shown = [json.loads(line) for line in done.stdout.splitlines()]
    assert shown == [j.to_json_dict() for j in build_journeys(pa.concat_tables(tables))]
    assert "summary" in done.stderr and "5 packets" in done.stderr

    by_port = [json.loads(x) for x in _show("--json", "--port", "50001", str(path)).stdout.splitlines()]
    assert [j["packet_id"] for j in by_port] == ["33"]  # 51, as every id is printed: hex
    # 8080 is only seen after DNAT: still every packet
    assert len(_show("--json", "--port", "8080", str(path)).stdout.splitlines()) == 5
    assert len(_show("--json", "--host", CONTAINER, "--port", "40002", str(path)).stdout.splitlines()) == 1
    assert len(_show("--json", "--container", "web", str(path)).stdout.splitlines()) == 5
    assert len(_show("--json", "--container", "c0ffee", str(path)).stdout.splitlines()) == 5
    assert _show("--json", "--container", "other", str(path)).stdout == ""
    assert _show("--json", "--proto", "udp", str(path)).stdout == ""


def test_show_human_output_and_torn_warning(tmp_path):
    path = tmp_path / "cap.arrows"
    w = write(path, [table_of(2), table_of(2, first_id=9)], close=False)
    os.truncate(path, w.bytes_written - 15)
    done = _show("--no-color", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("tc_ingress") >= 2 and "DNAT" in done.stdout and "summary" not in done.stdout
    assert "summary  2 packets" in done.stderr  # the summary is about the run: stderr, as tcpdump's
    assert "tracer: warning:" in done.stderr and "recovered 1 batches" in done.stderr and "torn" in done.stderr
    w.close()


def _closes_promptly(gen) -> bool:
    import threading

    done = threading.Event()
    threading.Thread(target=lambda: (gen.close(), done.set()), daemon=True).start()
    return done.wait(5)


def test_read_ahead_close_returns_when_the_reader_stops_early_with_the_queue_full():
    import time

    from tracer.capture.reader import _read_ahead

    gen = _read_ahead(iter(range(5)), 4)
    assert next(gen) == 0
    time.sleep(0.3)  # the producer has filled the queue and waits to put "end"
    assert _closes_promptly(gen)


def test_read_ahead_close_returns_when_the_producer_fails_with_the_queue_full():
    import time

    from tracer.capture.reader import _read_ahead

    def items():
        yield from range(5)
        raise ValueError("torn")

    gen = _read_ahead(items(), 4)
    assert next(gen) == 0
    time.sleep(0.3)
    assert _closes_promptly(gen)


def test_read_ahead_still_yields_everything_then_the_error():
    from tracer.capture.reader import _read_ahead

    def items():
        yield from range(10)
        raise ValueError("torn")

    got = []
    with pytest.raises(ValueError, match="torn"):
        for x in _read_ahead(items(), 2):
            got.append(x)
    assert got == list(range(10))


def test_documented_readers_by_the_package_name():
    """README and docs/capture-format.md name tracer.capture.read_capture and
    open_capture: the package keeps them."""
    import tracer.capture
    import tracer.capture.reader

    assert tracer.capture.read_capture is tracer.capture.reader.read_capture
    assert tracer.capture.open_capture is tracer.capture.reader.open_capture
