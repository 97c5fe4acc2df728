"""The aggregations of `tracer stats` and `tracer report` that outgrow memory,
in DuckDB (embedded, offline): its buffer manager spills to disk, so a capture
of any size is reduced within a fixed memory limit.

``analysis`` hands over, chunk by chunk, one row per hop segment (segment
key, latency, position in its journey) and one row per packet (flow, times,
length, verdict, first sighting's endpoints as codes of ``Strings``). Packet
rows are appended to an uncompressed Parquet file in the spill directory
and DuckDB queries that file (``pkt`` is a view over it): writing them costs
about a fifth of inserting them into a DuckDB table (which, past DuckDB's
memory limit, also spilled them to disk), and DuckDB scans the file as fast.
At the end:

- segment percentiles are exact and match numpy's default ('linear')
  quantiles (tracer/segment_latency.py): each latency is stored with its
  histogram bucket in flat files beside DuckDB's spill files (sequential
  writes, no table: they are only ever read back by key), and one scan at
  the end fetches the few buckets that hold the wanted ranks.
- flows are a ``GROUP BY flow_id`` over packets, read back lazily
  (``FlowRows``), so even millions of flows never sit in memory as objects.
- throughput is a ``GROUP BY`` over packet first-sighting times.
"""

from __future__ import annotations

import fcntl
import os
import queue
import re
import shutil
import stat
import threading
import tempfile
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa

from tracer.analysis_rows import _ints
from tracer.errors import TracerError, one_line
from tracer.interning import Interner

# DuckDB's own memory (its buffer manager spills past it); the rest of the
# process (a chunk of rows, the packet window) stays well under 1 GB with it.
MEMORY_ENV = "TRACER_DUCKDB_MEMORY"
DEFAULT_MEMORY = "256MB"
THREADS = 2

# A size as DuckDB spells it: a number and a unit (no unit is rejected by
# DuckDB too), e.g. 256MB, 1.5GB, 512MiB, 2g, 50%.
_MEMORY_SIZE = re.compile(r"\d+(\.\d+)?\s*([kmgt]i?b?|b|bytes?|%)", re.IGNORECASE)


def memory_limit() -> str:
    """DuckDB's memory limit from TRACER_DUCKDB_MEMORY, checked here so a
    typo is one line naming the variable, not a DuckDB parser traceback."""
    value = os.environ.get(MEMORY_ENV, DEFAULT_MEMORY).strip()
    if not _MEMORY_SIZE.fullmatch(value):
        raise TracerError(f"{MEMORY_ENV}={value!r} is not a memory size (e.g. {DEFAULT_MEMORY} or 2GB)")
    return value

# How packet rows are stored (the packet rows' Parquet files, which ``pkt``
# reads): the narrow columns packed in three int64s, so that a row is eight
# plain columns (codes + 1, so that -1, none, packs as 0; every field
# non-negative).
_STORED_SCHEMA = pa.schema([
    ("packet_id", pa.uint64()), ("flow_id", pa.uint64()), ("first_wall", pa.int64()), ("duration", pa.int64()),
    ("sightings", pa.int32()),
    ("ends", pa.int64()),   # src_ip + 1 << 32 | dst_ip + 1
    ("ports", pa.int64()),  # protocol + 1 << 32 | src_port << 16 | dst_port
    ("info", pa.int64()),   # container + 1 << 32 | length << 16 | direction << 8 | verdict
])
_SQL_TYPE = {pa.uint64(): "UBIGINT", pa.int64(): "BIGINT", pa.int32(): "INTEGER"}
SEGMENT_SCHEMA = pa.schema([("key", pa.int64()), ("dt", pa.int64())])
PACKET_SCHEMA = pa.schema([
    ("packet_id", pa.uint64()), ("flow_id", pa.uint64()), ("first_wall", pa.int64()), ("duration", pa.int64()),
    ("length", pa.int32()), ("sightings", pa.int32()), ("direction", pa.int8()), ("verdict", pa.int8()),
    ("protocol", pa.int32()), ("src_ip", pa.int32()), ("src_port", pa.int32()), ("dst_ip", pa.int32()),
    ("dst_port", pa.int32()), ("container", pa.int32()),
])


_LENGTH = "((info >> 16) & 65535)"
_DIRECTION = "((info >> 8) & 255)"
_TWO_64 = "18446744073709551616::HUGEINT"  # a multiply, not << 64: DuckDB refuses to shift a negative number
_VERDICT = "(info & 255)"


def _packed(packets: pa.Table) -> pa.Table:
    """PACKET_SCHEMA rows as stored (_STORED_SCHEMA)."""
    def col(name: str) -> np.ndarray:
        return _ints(packets, name)

    return pa.table({
        "packet_id": _ints(packets, "packet_id", np.uint64), "flow_id": _ints(packets, "flow_id", np.uint64),
        # null where a packet has no time (a damaged capture's rows without one): no time, not 0
        "first_wall": packets["first_wall"], "duration": packets["duration"], "sightings": _ints(packets, "sightings", np.int32),
        "ends": (col("src_ip") + 1) << 32 | (col("dst_ip") + 1),
        "ports": (col("protocol") + 1) << 32 | (col("src_port") & 0xFFFF) << 16 | (col("dst_port") & 0xFFFF),
        "info": (col("container") + 1) << 32 | (col("length") & 0xFFFF) << 16 | (col("direction") & 0xFF) << 8
        | (col("verdict") & 0xFF),
    }, schema=_STORED_SCHEMA)


def connect(temp_dir: str) -> Any:
    """An in-memory DuckDB that spills to ``temp_dir``."""
    import duckdb

    limit = memory_limit()
    try:
        con = duckdb.connect(config={
            "memory_limit": limit, "threads": THREADS, "temp_directory": temp_dir,
            "preserve_insertion_order": False,
        })
    except duckdb.Error as exc:  # a size the pattern lets through but DuckDB does not take
        raise TracerError(f"{MEMORY_ENV}={limit!r}: {one_line(str(exc))} (e.g. {DEFAULT_MEMORY})") from None
    return quiet(con)


SPILL_PREFIX = "tracer-duckdb-"


SPILL_LOCK = "owner.lock"
_held_locks: dict[str, int] = {}  # spill directory -> fd of its flocked lock file


def spill_dir() -> str:
    """A new directory for DuckDB to spill into (under TMPDIR). This process
    holds an flock on its lock file until ``remove_spill_dir``; ones left by
    processes that died without cleaning up (SIGKILL) are removed first."""
    base = Path(tempfile.gettempdir())
    _sweep_abandoned(base)
    path = tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{os.getpid()}-")
    # Locked under another name, then renamed: a sweeper never sees the lock
    # file before it is held.
    fd = os.open(os.path.join(path, SPILL_LOCK + ".new"), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.rename(os.path.join(path, SPILL_LOCK + ".new"), os.path.join(path, SPILL_LOCK))
    _held_locks[path] = fd
    return path


def remove_spill_dir(path: str) -> None:
    """The spill directory removed, then its lock released."""
    shutil.rmtree(path, ignore_errors=True)
    fd = _held_locks.pop(path, None)
    if fd is not None:
        os.close(fd)


def _sweep_abandoned(base: Path) -> None:
    """Remove spill directories nobody holds. Ownership is the flock, not a
    pid: a tracer in another PID namespace sharing TMPDIR has pids this
    /proc does not show. A directory without a lock file (being created, or
    by an older tracer) or of another user is left alone."""
    for old in base.glob(f"{SPILL_PREFIX}*"):
        try:
            st = os.lstat(old)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                continue
            fd = os.open(old / SPILL_LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # held: its owner is alive
            continue
        try:
            shutil.rmtree(old, ignore_errors=True)
        finally:
            os.close(fd)


def quiet(con: Any) -> Any:
    """No progress bar on the terminal (a session setting: each cursor too)."""
    con.execute("SET enable_progress_bar = false")
    return con


class Strings(Interner[str]):
    """Distinct strings as small ints, the same across chunks (each chunk has
    its own Arrow dictionaries). Code -1 is null."""

    def codes(self, values: list) -> np.ndarray:
        """Global code per value of a chunk's dictionary, plus -1 for a
        trailing null slot."""
        return np.array([-1 if v is None else self.id_of(v) for v in values] + [-1], np.int32)

    def get(self, code: int | None) -> str | None:
        return None if code is None or code < 0 else self.values[code]


class Store:
    """Segment latencies (flat files) and packet rows (a Parquet file), and
    the queries over them (DuckDB). Rows are written on a thread of the
    store's own (the writes release the GIL), so the next chunk is worked
    on meanwhile; ``wait`` before querying."""

    def __init__(self) -> None:
        self._dir = spill_dir()
        try:
            self.con = connect(self._dir)
        except BaseException:
            remove_spill_dir(self._dir)
            raise
        # Segment latencies: one (key, dt) per hop segment, the most rows by
        # far (9 a packet), and only ever read back by key. Appended to two
        # flat files in the spill directory instead of a DuckDB table: 12
        # bytes a row, written sequentially, and read back by one scan with a
        # lookup table of the wanted keys (a DuckDB insert and semi join of
        # them cost about a quarter of `stats`).
        self._seg_keys = open(os.path.join(self._dir, "seg.keys"), "w+b")
        self._seg_dts = open(os.path.join(self._dir, "seg.dts"), "w+b")
        self._seg_rows = 0
        # The spill directory goes with the last user of the store (an
        # Analysis's FlowRows may outlive the analysis), or at exit.
        # Packet rows: Parquet files (one per run of adds between two waits,
        # usually one) that the view ``pkt`` reads; an empty table until then.
        self._pkt_writer: list = [None]  # the open writer (a list: the finalizer closes it too)
        self._pkt_files = 0
        self.close = weakref.finalize(self, _close, self.con, self._dir, (self._seg_keys, self._seg_dts),
                                      self._pkt_writer)
        self.con.execute(f"CREATE VIEW pkt AS SELECT * FROM ({self._empty_packets()})")
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._flows_made = False  # the whole flows table (flow_table)
        self._subsets = 0

    def add(self, segments: pa.Table, packets: pa.Table) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._write_loop, daemon=True, name="tracer-store-write")
            self._thread.start()
        if self._error is not None:
            self.wait()
        self._queue.put((segments, packets))

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue
            try:
                segments, packets = item
                if segments.num_rows:
                    keys = _ints(segments, "key")
                    if keys.min() < 0 or keys.max() >= 1 << 31:  # stored as int32: never wrap silently
                        raise ValueError(f"segment key {int(keys.max())} outside the store's 32-bit range")
                    # At the end: a scan (_scan) moves the files' positions.
                    self._seg_keys.seek(0, os.SEEK_END)
                    self._seg_dts.seek(0, os.SEEK_END)
                    self._seg_keys.write(keys.astype(np.int32).data)
                    self._seg_dts.write(_ints(segments, "dt").data)
                    self._seg_rows += segments.num_rows
                if packets.num_rows:
                    self._write_packets(_packed(packets))
            except BaseException as exc:  # re-raised by wait()
                self._error = exc

    def _write_packets(self, rows: pa.Table) -> None:
        import pyarrow.parquet as pq

        if self._pkt_writer[0] is None:
            self._pkt_files += 1
            # Plain values, no dictionaries, no statistics: written about as
            # fast as the bytes go, and every query scans the whole file anyway.
            self._pkt_writer[0] = pq.ParquetWriter(self._pkt_path(self._pkt_files), _STORED_SCHEMA,
                                                   compression="none", use_dictionary=False, write_statistics=False)
        self._pkt_writer[0].write_table(rows)

    def _pkt_path(self, n: int) -> str:
        return os.path.join(self._dir, f"packets-{n}.parquet")

    @staticmethod
    def _empty_packets() -> str:
        return "SELECT " + ", ".join(f"NULL::{_SQL_TYPE[f.type]} AS {f.name}" for f in _STORED_SCHEMA) + " WHERE false"

    def wait(self) -> None:
        """Every row added is in the files ``pkt`` reads (or the write's error is raised)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error
        if self._pkt_writer[0] is not None:
            self._pkt_writer[0].close()
            self._pkt_writer[0] = None
            files = ", ".join(_sql_text(self._pkt_path(i + 1)) for i in range(self._pkt_files))
            self.con.execute(f"CREATE OR REPLACE VIEW pkt AS SELECT * FROM read_parquet([{files}])")

    # -- segments --------------------------------------------------------------

    def latencies(self, keys: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(key, dt) of every segment latency stored under one of ``keys``."""
        return self._scan(np.asarray(keys, np.int64))

    def latencies_between(self, lo: int, hi: int) -> np.ndarray:
        return self._scan(np.arange(lo, hi + 1, dtype=np.int64))[1]

    def _scan(self, wanted: np.ndarray, block: int = 1 << 23) -> tuple[np.ndarray, np.ndarray]:
        """The stored (key, dt) whose key is one of ``wanted``, in one pass
        over the files, a block at a time (bounded memory)."""
        self.wait()
        wanted = wanted[(wanted >= 0) & (wanted < 1 << 31)]
        if not self._seg_rows or not len(wanted):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        lut = np.zeros(int(wanted.max()) + 2, bool)
        lut[wanted] = True
        self._seg_keys.flush()
        self._seg_dts.flush()
        keys_out, dts_out = [], []
        for at in range(0, self._seg_rows, block):
            n = min(block, self._seg_rows - at)
            self._seg_keys.seek(at * 4)
            k = np.fromfile(self._seg_keys, np.int32, n)
            hit = np.flatnonzero(lut[np.minimum(k, len(lut) - 1)])
            if not len(hit):
                continue
            self._seg_dts.seek(at * 8)
            d = np.fromfile(self._seg_dts, np.int64, n)
            keys_out.append(k[hit].astype(np.int64))
            dts_out.append(d[hit])
        if not keys_out:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(keys_out), np.concatenate(dts_out)

    # -- packets ---------------------------------------------------------------

    def flows(self) -> "FlowRows":
        self.wait()
        return FlowRows(self)

    def flow_count(self) -> int:
        """Distinct flows (a packet without a flow id is in none)."""
        self.wait()
        (n,) = self.con.execute("SELECT count(DISTINCT flow_id) FROM pkt WHERE flow_id != 0").fetchone()
        return int(n)

    def slowest_flow_ids(self, k: int) -> np.ndarray:
        """The ids of the ``k`` flows that come first slowest first (by their
        slowest packet, ties by id), without grouping every packet by flow
        into the whole flows table: one two-column aggregate and a top-k.
        (A top-N of packets widened until it held k flows was cheaper on
        even traffic but sorted every packet when one big flow held the
        slowest packets, the iperf-like capture.)"""
        self.wait()
        rows = self.con.execute(
            "SELECT flow_id FROM (SELECT flow_id, max(duration) AS slowest FROM pkt WHERE flow_id != 0 "
            "GROUP BY flow_id) ORDER BY slowest DESC NULLS LAST, flow_id LIMIT $n", {"n": int(k)}).fetchnumpy()["flow_id"]
        return np.asarray(rows, np.uint64)

    def flow_table(self, only: np.ndarray | None = None) -> str:
        """The flows table's name: every flow (made once, the first time it is
        asked for), or with ``only`` a new table of just those flows."""
        self.wait()
        where = "flow_id != 0"
        name = "flows"
        if only is not None:
            self._subsets += 1
            name = f"flows_{self._subsets}"
            self.con.register("wanted_flows", pa.table({"flow_id": pa.array(only, pa.uint64())}))
            where = "flow_id IN (SELECT flow_id FROM wanted_flows)"
        elif self._flows_made:
            return name
        # A flow's first request (original direction first, then time) names
        # its client and service: one arg_min over a packed key.
        # Ties (the same time, the same duration) go to the lower packet id:
        # the same row whichever way, and however DuckDB's threads met them.
        # A packet without a time (null first_wall) comes after those with one.
        first = (f"((((({_DIRECTION} != 1)::BIGINT << 62) | coalesce(first_wall, {(1 << 62) - 1}))::HUGEINT * {_TWO_64})"
                 " + packet_id::HUGEINT)")
        self.con.execute(f"""
            CREATE TABLE {name} AS SELECT flow_id, max(info >> 32) - 1 AS container,
              arg_min(struct_pack(ends, ports), {first}) AS f,
              count(*) AS packets, sum({_LENGTH})::BIGINT AS bytes,
              min(first_wall) AS first_wall, max(first_wall + coalesce(duration, 0)) AS last_wall,
              count(*) FILTER ({_DIRECTION} = 1) AS requests, count(*) FILTER ({_DIRECTION} = 2) AS replies,
              count(*) FILTER ({_VERDICT} = 0) AS delivered, count(*) FILTER ({_VERDICT} = 1) AS dropped,
              count(*) FILTER ({_VERDICT} = 2) AS unknown,
              max(duration) AS slowest_ns, arg_max(packet_id, (duration::HUGEINT * {_TWO_64}) + (18446744073709551615 - packet_id)::HUGEINT)
                AS slowest_packet_id
            FROM pkt WHERE {where} GROUP BY flow_id""")
        if only is not None:
            self.con.unregister("wanted_flows")
        else:
            self._flows_made = True
        return name

    def throughput(self, t0: int, width: int, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sightings, packets and bytes per bin of ``width`` ns from ``t0``, by
        each packet's first sighting."""
        self.wait()
        rows = self.con.execute(
            f"SELECT (first_wall - $t0) // $w AS b, sum(sightings)::BIGINT, count(*), sum({_LENGTH})::BIGINT "
            "FROM pkt WHERE first_wall IS NOT NULL GROUP BY b", {"t0": t0, "w": width}).fetchnumpy()
        ev, pk, by = (np.zeros(bins) for _ in range(3))
        b = rows["b"].astype(np.int64)
        keep = (b >= 0) & (b < bins)
        for out, col in zip((ev, pk, by), list(rows)[1:]):
            np.add.at(out, b[keep], rows[col][keep].astype(np.float64))
        return ev, pk, by



def _sql_text(text: str) -> str:
    """A string literal for DuckDB's SQL."""
    return "'" + text.replace("'", "''") + "'"


def _close(con: Any, path: str, files: tuple = (), writer: list | None = None) -> None:
    try:
        for f in files:
            f.close()
        if writer and writer[0] is not None:
            writer[0].close()
        con.close()
    finally:
        remove_spill_dir(path)


FLOW_COLUMNS = ("flow_id", "container", "(f.ports >> 32) - 1 AS protocol", "(f.ends >> 32) - 1 AS src_ip",
                "(f.ports >> 16) & 65535 AS src_port", "(f.ends & 4294967295) - 1 AS dst_ip", "f.ports & 65535 AS dst_port",
                "packets", "bytes",
                "first_wall", "last_wall", "requests", "replies", "delivered", "dropped", "unknown", "slowest_ns",
                "slowest_packet_id")


class FlowRows:
    """The flows, slowest first, read back lazily: ``make`` turns a row dict
    into what the caller wants (analysis.FlowStats). Grouping millions of
    packets by flow is most of what `stats` costs at the end on a big
    capture, and the text and the report show only the slowest few: ``len``
    counts distinct flows, a slice from the start (``flows[:20]``) groups just
    the flows it holds (Store.slowest_flow_ids); iterating, or any other
    slice, groups them all once (Store.flow_table)."""

    HEAD = 10_000  # slices that end within this many flows: grouped alone

    def __init__(self, store: Store, make: Callable[[dict], Any] = dict) -> None:
        self.store, self.make = store, make
        self._count: int | None = None

    def __len__(self) -> int:
        if self._count is None:
            self._count = self.store.flow_count()
        return self._count

    def _query(self, table: str, limit: int | None = None, offset: int = 0) -> str:
        tail = f" LIMIT {int(limit)} OFFSET {int(offset)}" if limit is not None else ""
        return f"SELECT {', '.join(FLOW_COLUMNS)} FROM {table} ORDER BY slowest_ns DESC NULLS LAST, flow_id{tail}"

    def _rows(self, sql: str) -> list[dict]:
        return quiet(self.store.con.cursor()).sql(sql).to_arrow_table().to_pylist()

    def __iter__(self) -> Iterator[Any]:
        reader = quiet(self.store.con.cursor()).sql(self._query(self.store.flow_table())).to_arrow_reader(1 << 14)
        for batch in reader:
            for row in batch.to_pylist():
                yield self.make(row)

    def __getitem__(self, item: int | slice) -> Any:
        if isinstance(item, slice):
            start, stop, step = item.indices(len(self))
            if step != 1:
                return list(self)[item]
            if stop <= start:
                return []
            if stop <= self.HEAD:
                table = self.store.flow_table(self.store.slowest_flow_ids(stop))
                rows = self._rows(self._query(table, stop - start, start))
                self.store.con.execute(f"DROP TABLE {table}")
            else:
                rows = self._rows(self._query(self.store.flow_table(), stop - start, start))
            return [self.make(r) for r in rows]
        index = item + len(self) if item < 0 else item
        if not 0 <= index < len(self):
            raise IndexError(item)
        return self[index: index + 1][0]

    def __bool__(self) -> bool:
        return len(self) > 0

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, (list, FlowRows)) else NotImplemented


