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

from tracer.aggregate import SPILL_PREFIX, Store, spill_dir
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


def test_spill_directories_of_dead_processes_are_removed():
    dead = Path(tempfile.gettempdir()) / f"{SPILL_PREFIX}999999999-test"
    dead.mkdir(exist_ok=True)
    mine = spill_dir()
    try:
        assert not dead.exists() and Path(mine).name.startswith(f"{SPILL_PREFIX}{os.getpid()}-")
    finally:
        os.rmdir(mine)


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
