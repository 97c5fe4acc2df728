"""tracer.aggregate and tracer.segment_latency: exact percentiles from
histograms plus DuckDB, flows read back lazily, spill directories cleaned."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tracer.aggregate import SPILL_LOCK, SPILL_PREFIX, Store, remove_spill_dir, spill_dir
from tracer.segment_latency import SegmentLatencies, buckets


def test_buckets_keep_order_for_negative_and_huge_values():
    v = np.array([-(1 << 40), -5000, -1, 0, 1, 2, 63, 64, 65, 1000, 10**6, 1 << 62], np.int64)
    b = buckets(v)
    assert np.all(np.diff(b) >= 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_percentiles_are_numpys_exactly(seed):
    """Many chunks, several segments, ties, negative values (a drop row
    sorted last): the same as np.percentile over everything at once."""
    rng = np.random.default_rng(seed)
    store, lat = Store(), SegmentLatencies()
    values: dict[int, list[np.ndarray]] = {}
    for _ in range(7):
        n = int(rng.integers(1, 5000))
        seg = rng.integers(0, 4, n)
        dt = np.where(rng.random(n) < 0.01, -rng.integers(0, 1000, n), rng.lognormal(9, 1.2, n).astype(np.int64))
        dt[rng.random(n) < 0.2] = 1234  # ties
        key = lat.add(seg, dt, rng.integers(0, 9, n))
        store.add(pa.table({"key": key, "dt": dt}), pa.table({}))
        for s in range(4):
            values.setdefault(s, []).append(dt[seg == s])
    got = lat.quantiles(store.latencies, (0.5, 0.9, 0.99))
    for s, parts in values.items():
        allv = np.concatenate(parts)
        if not len(allv):
            continue
        assert lat.count[s] == len(allv) and lat.max[s] == allv.max()
        for q in (0.5, 0.9, 0.99):
            assert got[s][q] == pytest.approx(np.percentile(allv, q * 100), rel=1e-12, abs=1e-9), (s, q)


def test_segment_rows_added_after_a_scan_are_appended_not_written_over():
    store = Store()
    store.add(pa.table({"key": np.array([1, 1, 2, 2], np.int64), "dt": np.array([10, 20, 30, 40], np.int64)}), pa.table({}))
    # A scan in blocks of two whose last block has no hit leaves the dt file's position mid-file.
    assert sorted(store._scan(np.array([1]), block=2)[1].tolist()) == [10, 20]
    store.add(pa.table({"key": np.array([1, 3], np.int64), "dt": np.array([50, 60], np.int64)}), pa.table({}))
    keys, dts = store.latencies([1, 2, 3])
    assert sorted(zip(keys.tolist(), dts.tolist())) == [(1, 10), (1, 20), (1, 50), (2, 30), (2, 40), (3, 60)]


def _packets_of_flow(ids: list[int], flow: int, first_wall: int) -> pa.Table:
    n = len(ids)
    return pa.table({
        "packet_id": pa.array(ids, pa.uint64()), "flow_id": pa.array([flow] * n, pa.uint64()),
        "first_wall": np.arange(n, dtype=np.int64) + first_wall, "duration": np.arange(n, dtype=np.int64) * 10,
        "length": np.full(n, 100, np.int32), "sightings": np.full(n, 9, np.int32),
        "direction": np.ones(n, np.int8), "verdict": np.zeros(n, np.int8), "protocol": np.zeros(n, np.int32),
        "src_ip": np.zeros(n, np.int32), "src_port": np.full(n, 40000, np.int32), "dst_ip": np.ones(n, np.int32),
        "dst_port": np.full(n, 80, np.int32), "container": np.full(n, -1, np.int32),
    })


def test_packet_rows_are_queried_from_their_file_before_and_after_more_are_added():
    """No packet yet: the queries see an empty table; packets added after a
    query (a new file) join the ones before it. (The flows table is made
    once, by the first query that needs it: after every add.)"""
    assert list(Store().flows()) == []
    store = Store()
    assert store.flow_count() == 0
    store.add(pa.table({"key": np.zeros(0, np.int64), "dt": np.zeros(0, np.int64)}), _packets_of_flow([1, 2, 3], 7, 1000))
    assert store.flow_count() == 1
    store.add(pa.table({"key": np.zeros(0, np.int64), "dt": np.zeros(0, np.int64)}), _packets_of_flow([4, 5], 8, 2000))
    flows = {r["flow_id"]: r for r in store.flows()}
    assert {f: r["packets"] for f, r in flows.items()} == {7: 3, 8: 2}
    assert flows[7]["bytes"] == 300 and flows[7]["slowest_ns"] == 20 and flows[7]["slowest_packet_id"] == 3
    ev, pk, by = store.throughput(1000, 1000, 2)
    assert pk.tolist() == [3, 2] and ev.tolist() == [27, 18] and by.tolist() == [300, 200]
    assert sorted(p.name for p in Path(store._dir).glob("packets-*.parquet")) == ["packets-1.parquet", "packets-2.parquet"]


def test_a_segment_key_beyond_32_bits_is_an_error_not_a_wrap():
    store = Store()
    store.add(pa.table({"key": np.array([1 << 31], np.int64), "dt": np.array([1], np.int64)}), pa.table({}))
    with pytest.raises(ValueError, match="32-bit"):
        store.wait()


@pytest.fixture
def own_tmpdir(tmp_path, monkeypatch):
    """spill_dir() under a TMPDIR of this test's own, not the real /tmp."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _abandoned(base: Path, name: str, lock: bool = True) -> Path:
    d = base / f"{SPILL_PREFIX}{name}"
    d.mkdir()
    (d / "spill.tmp").write_bytes(b"x")
    if lock:
        (d / SPILL_LOCK).touch()
    return d


def test_spill_directories_nobody_holds_are_removed(own_tmpdir):
    dead = _abandoned(own_tmpdir, "999999999-test")
    reused_pid = _abandoned(own_tmpdir, f"{os.getpid()}-test")  # the pid says alive; the free lock says not
    mine = spill_dir()
    try:
        assert not dead.exists() and not reused_pid.exists()
        assert Path(mine).parent == own_tmpdir and (Path(mine) / SPILL_LOCK).exists()
    finally:
        remove_spill_dir(mine)
    assert not Path(mine).exists()


def test_a_live_spill_directory_survives_a_sweep_whatever_its_pid(own_tmpdir):
    # A tracer in another PID namespace: its pid is not in this /proc, but it
    # holds its lock.
    other = spill_dir()
    foreign = own_tmpdir / f"{SPILL_PREFIX}999999999-live"
    os.rename(other, foreign)
    from tracer import aggregate

    aggregate._held_locks[str(foreign)] = aggregate._held_locks.pop(other)
    mine = spill_dir()
    try:
        assert foreign.exists() and (foreign / SPILL_LOCK).exists()
    finally:
        remove_spill_dir(mine)
        remove_spill_dir(str(foreign))
    # released: the next sweep may take it (it is gone already) and finds nothing else
    assert not list(own_tmpdir.glob(f"{SPILL_PREFIX}*"))


def test_spill_directories_without_a_lock_file_or_of_another_user_are_left(own_tmpdir):
    unlocked = _abandoned(own_tmpdir, "999999999-creating", lock=False)
    foreign_user = _abandoned(own_tmpdir, "999999998-otheruser")
    chowned = os.geteuid() == 0
    if chowned:
        os.chown(foreign_user, 65534, 65534)
    mine = spill_dir()
    remove_spill_dir(mine)
    assert unlocked.exists()
    assert foreign_user.exists() == chowned


def test_a_spill_directory_lock_is_held_until_removed(own_tmpdir):
    import fcntl

    mine = spill_dir()
    fd = os.open(Path(mine) / SPILL_LOCK, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        remove_spill_dir(mine)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released
    finally:
        os.close(fd)


def test_stats_leaves_no_spill_directory(tmp_path):
    from tests.unit.analysis_data import capture_table, lab_capture, write_capture

    rows, _ = lab_capture()
    cap = write_capture(tmp_path / "cap.arrows", capture_table(rows))
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    for args in (["stats", str(cap)], ["report", str(cap), "-o", str(tmp_path / "r.html")],
                 ["sql", "SELECT count(*) FROM sightings", str(cap)]):
        proc = subprocess.run([sys.executable, "-m", "tracer", *args], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        assert "%" not in proc.stderr  # no DuckDB progress bar
        assert not list(tmp_path.glob(f"{SPILL_PREFIX}*")), args


@pytest.mark.parametrize("value", ["256MB", "1.5GB", "512 MiB", "2g", "50%"])
def test_memory_limit_takes_sizes_duckdb_takes(monkeypatch, value):
    from tracer.aggregate import connect, memory_limit

    monkeypatch.setenv("TRACER_DUCKDB_MEMORY", value)
    assert memory_limit() == value
    connect(tempfile.gettempdir()).close()  # DuckDB agrees


def test_bad_memory_limit_is_one_line_and_leaves_no_spill_directory(tmp_path):
    from tests.unit.analysis_data import capture_table, lab_capture, write_capture

    rows, _ = lab_capture()
    cap = write_capture(tmp_path / "cap.arrows", capture_table(rows))
    env = {**os.environ, "TMPDIR": str(tmp_path), "TRACER_DUCKDB_MEMORY": "lots"}
    for args in (["stats", str(cap)], ["report", str(cap), "-o", str(tmp_path / "r.html")],
                 ["sql", "SELECT count(*) FROM sightings", str(cap)]):
        proc = subprocess.run([sys.executable, "-m", "tracer", *args], capture_output=True, text=True, env=env)
        assert proc.returncode != 0, args
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "TRACER_DUCKDB_MEMORY" in proc.stderr and "256MB" in proc.stderr, proc.stderr
        assert not list(tmp_path.glob(f"{SPILL_PREFIX}*")), args
        assert not (tmp_path / "r.html").exists()


def _packets(rng, n: int, flows: int) -> pa.Table:
    from tracer.aggregate import PACKET_SCHEMA
    cols = {
        "packet_id": np.arange(1, n + 1, dtype=np.uint64), "flow_id": rng.integers(0, flows, n).astype(np.uint64),
        "first_wall": rng.integers(0, 10**9, n), "duration": rng.integers(0, 50, n),  # many ties
        "length": rng.integers(40, 1500, n).astype(np.int32), "sightings": np.full(n, 9, np.int32),
        "direction": rng.integers(0, 3, n).astype(np.int8), "verdict": rng.integers(0, 3, n).astype(np.int8),
    }
    for name in ("protocol", "src_ip", "src_port", "dst_ip", "dst_port", "container"):
        cols[name] = rng.integers(-1, 5, n).astype(np.int32)
    return pa.table({f.name: pa.array(cols[f.name], f.type) for f in PACKET_SCHEMA})


@pytest.mark.parametrize("flows", [1, 7, 3000])
def test_the_slowest_flows_alone_are_the_head_of_all_of_them(flows):
    """``flows[:k]`` groups only the flows it shows (the top packets by
    duration); it is exactly the first k of every flow grouped, whatever the
    ties in duration, the flow id 0 (no flow) and k past the end."""
    rng = np.random.default_rng(flows)
    store = Store()
    for _ in range(3):
        store.add(pa.table({"key": np.zeros(0, np.int64), "dt": np.zeros(0, np.int64)}), _packets(rng, 4000, flows))
    head = store.flows()
    every = list(store.flows())
    assert len(head) == len(every) == len({r["flow_id"] for r in every}) and 0 not in {r["flow_id"] for r in every}
    assert [r["slowest_ns"] for r in every] == sorted((r["slowest_ns"] for r in every), reverse=True)
    for k in (1, 5, 20, 1500, len(every) + 3):
        assert head[:k] == every[:k], k
    assert head[3:9] == every[3:9] and head[5:5] == []
    if flows == 1:  # every packet without a flow (id 0): none
        assert not head and len(head) == 0 and head[:20] == []
        with pytest.raises(IndexError):
            head[0]
    else:
        assert head[-1] == every[-1] and head[2] == every[2] and len(every) > 3


def _flows_all_and_head(rows: dict, k: int):
    """Packet ``rows`` (column -> values) in a Store: its flows grouped all
    at once, then the first ``k`` grouped alone."""
    from tracer.aggregate import PACKET_SCHEMA
    store = Store()
    store.add(pa.table({"key": np.zeros(0, np.int64), "dt": np.zeros(0, np.int64)}),
              pa.table({f.name: pa.array(rows[f.name], f.type) for f in PACKET_SCHEMA}))
    return list(store.flows()), store.flows()[:k]


def test_ties_within_a_flow_go_to_the_lower_packet_id():
    """Two packets of a flow equally slow, or first at the same time: the
    flow names the lower packet id, whether its flows are grouped all or alone."""
    rng = np.random.default_rng(9)
    rows = _packets(rng, 6, 2).to_pydict()
    rows["flow_id"] = [5, 5, 5, 6, 6, 6]
    rows["packet_id"] = [30, 10, 20, 61, 62, 60]
    rows["duration"] = [7, 7, 3, 4, 9, 9]
    rows["first_wall"] = [100, 100, 100, 50, 50, 50]
    rows["direction"] = [1, 1, 1, 1, 1, 1]
    rows["src_port"] = [1, 2, 3, 4, 5, 6]
    for got in _flows_all_and_head(rows, 2):
        by_flow = {r["flow_id"]: r for r in got}
        assert by_flow[5]["slowest_packet_id"] == 10 and by_flow[6]["slowest_packet_id"] == 60
        assert by_flow[5]["src_port"] == 2 and by_flow[6]["src_port"] == 6  # the first request: packet 10, packet 60


def test_times_before_1970_and_negative_durations_are_grouped_not_an_error():
    """A capture whose clock says 1969 (or a mutated one with a negative
    duration): the flows are grouped, the earliest request first, no DuckDB
    range error (a negative number shifted)."""
    rng = np.random.default_rng(3)
    rows = _packets(rng, 4, 1).to_pydict()
    rows["flow_id"] = [5, 5, 6, 6]
    rows["packet_id"] = [1, 2, 3, 4]
    rows["first_wall"] = [-2_000_000_000, -1_000_000_000, 10, 20]
    rows["duration"] = [-5, 8, 3, -1]
    rows["direction"] = [1, 1, 1, 1]
    rows["src_port"] = [1, 2, 3, 4]
    for got in _flows_all_and_head(rows, 2):
        by_flow = {r["flow_id"]: r for r in got}
        assert by_flow[5]["src_port"] == 1 and by_flow[5]["slowest_packet_id"] == 2
        assert by_flow[6]["slowest_packet_id"] == 3
