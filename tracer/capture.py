"""Captures on disk: Arrow IPC stream files (``.arrows``) in CAPTURE_SCHEMA.

Writing: ``CaptureWriter`` buffers decoded event tables and writes one record
batch at least once a second (so a SIGKILL loses at most that second), keeps
one growing dictionary per dictionary column so the stream only carries
dictionary *deltas*, compresses with zstd, creates files with mode 0600 and
rotates into numbered files (``cap.0000.arrows``, ``cap.0001.arrows``...), each
a complete stream with the full schema and metadata. ``Recorder`` wires a
writer to a live ``TraceSession``: metadata, container start/stop rows, the
closing statistics row, progress figures.

Reading: ``open_capture(paths)`` streams files batch by batch in bounded
memory (every batch through ``_conform``, the one place a stored batch
becomes rows of CAPTURE_SCHEMA); ``read_capture(paths)`` collects that into
one table for captures that fit in memory. Both tolerate a torn tail (a
writer killed mid-batch) and report what they recovered; anything they
cannot read raises ``CaptureReadError`` with a one-line message.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import socket
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tracer import __version__, events, record_words
from tracer.errors import TracerError, one_line
from tracer.journey_capture import JourneyRowReader, PlaceIds, journey_rows
from tracer.outfiles import create_fd

SUFFIX = ".arrows"
# Rows reach the OS at most this long after they were added (plus one tick of
# the trace loop, 0.1 s): a SIGKILL loses at most about a second. Timed from
# the oldest buffered row, so a burst after a quiet spell is one batch, not a
# tiny one then another: every batch costs ~3 KB of IPC metadata.
FLUSH_SECONDS = 0.9
# Larger batches compress better; at high rates cap the rows held in memory.
MAX_BATCH_ROWS = 1 << 17
# zstd level 3: lab HTTP traffic ~12 bytes/event (level 9 saves ~2 more but
# writes 4x slower, 0.5 M events/s on one core against 2.2 M at level 3).
ZSTD_LEVEL = 3
# Journey rows (schema 2) are few and dense: level 1 writes them in 0.4 µs
# per packet against 0.5-0.8 at level 3, for 7 % more bytes (44 B/packet on
# the lab's HTTP traffic against 41; sighting rows took ~70).
JOURNEY_ZSTD_LEVEL = 1
# Journey records laid out as rows together, at least this many (or at the flush).
JOURNEY_BATCH = 4096
_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # end-of-stream marker of the IPC stream format
_CONTINUATION = b"\xff\xff\xff\xff"
_ARROW_FILE_MAGIC = b"ARROW1"


class CaptureReadError(TracerError):
    """A capture file that cannot be read (missing, empty, not Arrow, wrong version)."""


class CaptureWriteError(TracerError):
    """A capture file that cannot be created or written."""


class CaptureReaderGone(CaptureWriteError):
    """`-w -`: whoever read the capture from our stdout closed the pipe.
    Not an error (as `| head` is not): the command stops, exit 0."""

    exit_code = 0


# --- sizes ------------------------------------------------------------------------

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """'10M' -> 10 MiB, '1G', '512k', '4096' (bytes). Units are powers of 1024."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"not a size: {text!r} (try 10M or 1G)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def part_path(path: str | os.PathLike, index: int) -> Path:
    """``cap.arrows`` -> ``cap.0003.arrows``: the names of rotated files."""
    p = Path(path)
    return p.with_name(f"{p.stem}.{index:04d}{p.suffix}")


# --- dictionaries ---------------------------------------------------------------


class _GrowingDictionary:
    """One column's dictionary for the life of a stream: values are only
    appended, so each batch's dictionary extends the previous one and the IPC
    writer emits a delta (just the new values) instead of a replacement."""

    def __init__(self, value_type: pa.DataType) -> None:
        self.value_type = value_type
        self.index: dict[Any, int] = {}
        self.values: list[Any] = []
        self._array: pa.Array | None = None

    def encode(self, chunk: pa.Array, index_type: pa.DataType) -> pa.DictionaryArray:
        if not isinstance(chunk, pa.DictionaryArray):
            chunk = chunk.dictionary_encode()
        lut = np.fromiter(
            (self._code(v) for v in chunk.dictionary.to_pylist()), dtype=np.int64, count=len(chunk.dictionary)
        )
        indices = pc.take(pa.array(lut, index_type), chunk.indices) if len(lut) else chunk.indices.cast(index_type)
        return pa.DictionaryArray.from_arrays(indices, self.array)

    def _code(self, value: Any) -> int:
        code = self.index.get(value)
        if code is None:
            code = self.index[value] = len(self.values)
            self.values.append(value)
            self._array = None
        return code

    @property
    def array(self) -> pa.Array:
        if self._array is None:
            self._array = pa.array(self.values, self.value_type)
        return self._array


# --- writing --------------------------------------------------------------------

Metadata = Mapping[str, str] | Callable[[], Mapping[str, str]]


def _create(path: Path) -> int:
    """Open for writing with mode 0600 (truncating an old capture), never
    following a symlink: a root process writing where users can plant links."""
    try:
        return create_fd(path)
    except OSError as exc:
        raise CaptureWriteError(f"cannot write {path}: {exc.strerror}") from None


def schema_with_metadata(metadata: Mapping[str, str], journeys: bool = False) -> pa.Schema:
    """The file's schema: sighting rows (version 1), or journey rows
    (version 2, what `record` writes; tracer/journey_capture.py)."""
    meta = {f"{events.META_PREFIX}{k}": str(v) for k, v in metadata.items()}
    version = events.JOURNEY_SCHEMA_VERSION if journeys else events.SCHEMA_VERSION
    meta.setdefault(f"{events.META_PREFIX}schema_version", version)
    return (events.JOURNEY_CAPTURE_SCHEMA if journeys else events.CAPTURE_SCHEMA).with_metadata(meta)


class _CountingPipe:
    """A pipe that says how much was written to it (a pipe cannot tell())."""

    def __init__(self, f: Any) -> None:
        self._f, self._n = f, 0

    def write(self, data) -> int:
        n = self._f.write(data)
        self._n += len(data) if n is None else n
        return n

    def tell(self) -> int:
        return self._n

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    @property
    def closed(self) -> bool:
        return self._f.closed


class CaptureWriter:
    """Writes CAPTURE_SCHEMA rows to ``path`` (or numbered parts when rotating);
    with ``journeys=True`` the kernel's journey records as JOURNEY_CAPTURE_SCHEMA
    rows (``add_journeys``) instead of sighting rows (``add_events``).

    Not thread-safe: one thread adds rows and calls ``tick()`` regularly (the
    trace loop does, ten times a second); ``tick`` writes the buffered rows once
    ``flush_seconds`` have passed and rotates files that are big or old enough.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        metadata: Metadata,
        *,
        rotate_size: int | None = None,
        rotate_seconds: float | None = None,
        flush_seconds: float = FLUSH_SECONDS,
        max_batch_rows: int = MAX_BATCH_ROWS,
        zstd_level: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        journeys: bool = False,
        max_files: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.journeys = journeys
        # tcpdump's -W: a ring of at most this many rotated files, the oldest removed
        self.max_files = max_files
        self.removed: list[Path] = []
        self._parts = 0
        self.schema = events.JOURNEY_CAPTURE_SCHEMA if journeys else events.CAPTURE_SCHEMA
        self.place_ids = PlaceIds()
        self.rotating = rotate_size is not None or rotate_seconds is not None
        self.rotate_size = rotate_size
        self.rotate_seconds = rotate_seconds
        self.flush_seconds = flush_seconds
        self.max_batch_rows = max_batch_rows
        self.clock = clock
        self._metadata = metadata
        # One thread: Arrow compresses a batch's buffers on its thread pool
        # by default, which on the lab's HTTP capture cost 3.7 µs of CPU per
        # packet against 2.3 on one thread (offline, docs/benchmarks.md;
        # live `record` runs differ by less than their noise). A live capture
        # competes with the traffic for CPU, not for time.
        if zstd_level is None:
            zstd_level = JOURNEY_ZSTD_LEVEL if journeys else ZSTD_LEVEL
        self._options = pa.ipc.IpcWriteOptions(
            compression=pa.Codec("zstd", compression_level=zstd_level), emit_dictionary_deltas=True, use_threads=False
        )
        self.paths: list[Path] = []
        self.event_rows = 0  # sightings (a journey row counts its hops)
        self.journey_rows = 0
        self.rule_rows = 0
        self.batches_written = 0
        self._closed_bytes = 0  # bytes in files already rotated away
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._records: list[np.ndarray] = []  # journey records not laid out as rows yet (add_journeys)
        self._records_held = 0
        self._journey_ctx: Any = None
        self._journey_lock: Any = None
        self._oldest = 0.0  # clock() when the oldest buffered row was added
        self._file = None
        self._stream: pa.ipc.RecordBatchStreamWriter | None = None
        self._opened_at = 0.0
        self._batches_in_file = 0
        self._dicts: dict[str, _GrowingDictionary] = {}
        self._open()  # the first file at once: a bad path fails before any tracing

    # -- rows ------------------------------------------------------------------
    def add_events(self, table: pa.Table) -> None:
        """Decoded events (EVENT_SCHEMA) as kind='event' rows."""
        n = table.num_rows
        if n == 0:
            return
        kind = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array(["event"]))
        rows = table.append_column(events.CAPTURE_SCHEMA.field("kind"), kind).append_column(
            events.CAPTURE_SCHEMA.field("info"), pa.nulls(n, pa.string())
        )
        self._buffer(rows)
        self.event_rows += n

    def add_journeys(self, records: np.ndarray, ctx: Any, lock: Any = None) -> None:
        """The kernel's journey records (events.JOURNEY_DTYPE) as `journey`
        rows; ``ctx`` (decode.DecodeContext, read under ``lock``) names their
        hops' places. Records wait until JOURNEY_BATCH of them are here or the
        rows are written: laying them out costs about half a millisecond a
        call whatever its size (2.2 µs a packet in calls of 350 records, 0.7
        from 2000 on)."""
        if not self.journeys:
            raise ValueError("add_journeys on a sighting-row capture")
        if not len(records):
            return
        if self._records_held == 0:
            self._buffer_started()
        self._records.append(records)
        self._records_held += len(records)
        self._journey_ctx, self._journey_lock = ctx, lock
        self.journey_rows += int(np.count_nonzero(records["n_hops"]))  # records without hops are not stored
        self.event_rows += int(np.minimum(records["n_hops"], events.MAX_HOPS).sum())
        if self._records_held >= JOURNEY_BATCH:
            self._lay_out_records()

    def _lay_out_records(self) -> None:
        if not self._records:
            return
        records = record_words.concat(self._records)
        self._records, self._records_held = [], 0
        if self._journey_lock is not None:
            with self._journey_lock:
                rows = journey_rows(records, self._journey_ctx, self.place_ids)
        else:
            rows = journey_rows(records, self._journey_ctx, self.place_ids)
        self._buffer(rows, started=True)

    def add_row(self, kind: str, ktime_ns: int, time_ns: int, info: Mapping[str, Any], **columns: Any) -> None:
        """One non-event row (container, stats...): packet columns stay null."""
        if kind not in events.ROW_KINDS:
            raise ValueError(f"unknown row kind {kind!r}")
        self._lay_out_records()  # rows stay in the order they came
        row = {"time": time_ns, "ktime_ns": ktime_ns, "kind": kind, "info": json.dumps(info, sort_keys=True), **columns}
        self._buffer(pa.Table.from_pylist([row], schema=self.schema))

    def add_rule_rows(self, rows: list[tuple[int, int, str, Mapping[str, Any]]], offset_ns: int) -> None:
        """Rule hits joined to packets, (ktime_ns, packet_id, hook, info)
        each, as kind='rule' rows (docs/capture-format.md)."""
        if not rows:
            return
        self._lay_out_records()  # rows stay in the order they came
        ktime = [r[0] for r in rows]
        # The hook goes in info: journey-row files (version 2) have no hook column.
        columns = {
            "time": pa.array([k + offset_ns for k in ktime], pa.timestamp("ns", tz="UTC")),
            "ktime_ns": pa.array(ktime, pa.uint64()),
            "packet_id": pa.array([r[1] for r in rows], pa.uint64()),
            "kind": pa.array(["rule"] * len(rows), pa.string()).dictionary_encode(),
            "info": pa.array([json.dumps({"hook": r[2], **r[3]}, sort_keys=True) for r in rows], pa.string()),
        }
        full = [columns[f.name] if f.name in columns else pa.nulls(len(rows), f.type) for f in self.schema]
        self._buffer(pa.Table.from_arrays(full, schema=self.schema))
        self.rule_rows += len(rows)

    def _buffer(self, rows: pa.Table, started: bool = False) -> None:
        if not started:
            self._buffer_started()
        self._pending.append(rows)
        self._pending_rows += rows.num_rows

    def _buffer_started(self) -> None:
        """Rows are about to be held: the flush clock starts with the oldest."""
        if self.closed:
            raise CaptureWriteError(f"{self.path}: capture already closed")
        if not self._pending and not self._records_held:
            self._oldest = self.clock()

    # -- time passing ------------------------------------------------------------
    def tick(self) -> None:
        """Write what is buffered if it is time (or plenty), rotate if due."""
        now = self.clock()
        held = self._pending_rows + self._records_held
        if held and (now - self._oldest >= self.flush_seconds or held >= self.max_batch_rows):
            self.flush()
        if self._stream is not None and self._batches_in_file and self.rotate_seconds is not None:
            if now - self._opened_at >= self.rotate_seconds:
                self._close_file()

    def flush(self) -> None:
        """Write buffered rows as one record batch and hand it to the OS."""
        self._lay_out_records()
        if not self._pending_rows:
            return
        if self._stream is None:
            self._open()
        places = self.place_ids.take_unwritten()  # before the rows that point at them
        if places:
            self._pending.insert(0, pa.Table.from_pylist(
                [{"kind": "place", "info": json.dumps(p, sort_keys=True)} for p in places], schema=self.schema))
        table = pa.concat_tables(self._pending)
        self._pending, self._pending_rows = [], 0
        for start in range(0, table.num_rows, self.max_batch_rows):
            self._write(table.slice(start, self.max_batch_rows))
        if self.rotate_size is not None and self.current_file_bytes >= self.rotate_size:
            self._close_file()

    def _write(self, table: pa.Table) -> None:
        arrays = []
        for f in self.schema:
            col = table.column(f.name)
            if pa.types.is_dictionary(f.type):
                state = self._dicts.get(f.name)
                if state is None:
                    state = self._dicts[f.name] = _GrowingDictionary(f.type.value_type)
                chunks = [state.encode(c, f.type.index_type) for c in col.chunks]
                arrays.append(pa.chunked_array(chunks, f.type).combine_chunks())
            else:
                arrays.append(col.combine_chunks())
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        try:
            self._stream.write_batch(batch)
            self._file.flush()
        except (OSError, pa.ArrowException) as exc:
            raise self._abandon(exc) from None
        self._good_bytes = self._file.tell()
        self.batches_written += 1
        self._batches_in_file += 1

    def _abandon(self, exc: BaseException) -> CaptureWriteError:
        """A write failed (disk full, I/O error): stop writing for good, cut
        the file back to its last whole batch (a reader recovers those and
        says the capture was not stopped cleanly) and return the one-line
        error to raise. Closing never raises a second error on top."""
        path = self.paths[-1] if self.paths else self.path
        self._is_closed = True
        self._pending, self._pending_rows = [], 0
        f, self._stream, self._file = self._file, None, None
        if f is not None:
            keep = os.dup(f.fileno()) if hasattr(f, "fileno") else None  # `-w -` (a pipe): nothing to cut
            try:
                f.close()  # may try to flush the torn batch's bytes again: ignored, cut below
            except (OSError, ValueError):
                pass
            if keep is not None:
                try:
                    if stat.S_ISREG(os.fstat(keep).st_mode):
                        os.ftruncate(keep, self._good_bytes)
                except OSError:
                    pass
                finally:
                    os.close(keep)
            self._closed_bytes += self._good_bytes
        if isinstance(exc, BrokenPipeError) and str(self.path) == STDIN:
            return CaptureReaderGone("the capture's reader closed the pipe")
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else one_line(str(exc), 200)
        kept = (f"the capture keeps the {self._batches_in_file:,} batches written before" if self._batches_in_file
                else "nothing of it could be written")
        return CaptureWriteError(f"writing {path}: {reason}; {kept}")

    # -- files ----------------------------------------------------------------
    @property
    def current_file_bytes(self) -> int:
        return self._file.tell() if self._file is not None else 0

    @property
    def bytes_written(self) -> int:
        return self._closed_bytes + self.current_file_bytes

    @property
    def closed(self) -> bool:
        return getattr(self, "_is_closed", False)

    def _open(self) -> None:
        path = part_path(self.path, self._parts) if self.rotating else self.path
        self._parts += 1
        self.paths.append(path)
        if str(self.path) == STDIN:  # `-w -`: the stream on stdout, a pipe (no tell())
            self._file = _CountingPipe(os.fdopen(os.dup(1), "wb"))
        else:
            self._file = os.fdopen(_create(path), "wb")
        self._good_bytes = 0
        self._batches_in_file = 0
        metadata = self._metadata() if callable(self._metadata) else self._metadata
        try:
            self._stream = pa.ipc.new_stream(self._file, schema_with_metadata(metadata, self.journeys),
                                             options=self._options)
            self._file.flush()
        except (OSError, pa.ArrowException) as exc:
            raise self._abandon(exc) from None
        self._good_bytes = self._file.tell()
        self._opened_at = self.clock()
        self._batches_in_file = 0
        while self.max_files is not None and len(self.paths) > self.max_files:
            oldest = self.paths.pop(0)  # closed already: only the current file is open
            try:
                oldest.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise CaptureWriteError(f"cannot remove {oldest} (-W): {exc.strerror or exc}") from None
            self.removed.append(oldest)
        self._dicts = {}  # a new stream starts with empty dictionaries
        self.place_ids.new_file()  # and knows no places yet

    def _close_file(self) -> None:
        if self._stream is None:
            return
        try:
            self._stream.close()  # writes the end-of-stream marker
            self._file.flush()
            size = self._file.tell()
            self._file.close()
        except (OSError, pa.ArrowException) as exc:
            raise self._abandon(exc) from None
        self._closed_bytes += size
        self._stream, self._file = None, None

    def close(self) -> None:
        """Write what is buffered and end the stream properly."""
        if self.closed:
            return
        try:
            if self._pending_rows or self._records_held:
                self.flush()
        finally:
            if not self.closed:  # a failed write has closed it already
                self._is_closed = True
                self._close_file()

    def __enter__(self) -> "CaptureWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- a writer on a live session -------------------------------------------------


def container_info(container: Any) -> dict[str, Any]:
    """The facts about a container a capture keeps (inventory.Container)."""
    return {
        "id": container.id,
        "name": container.name,
        "ips": list(container.ips),
        "published": [
            {"host_ip": p.host_ip, "host_port": p.host_port, "container_port": p.container_port, "proto": p.proto}
            for p in container.published
        ],
        "netns": container.netns_inode,
        "host_veth": container.host_veth,
    }


def command_line(argv: list[str] | None = None) -> str:
    argv = sys.argv if argv is None else argv
    return shlex.join(["tracer", *argv[1:]])


@dataclass
class Progress:
    events: int
    bytes: int
    lost: int
    elapsed: float

    def text(self) -> str:
        m, s = divmod(int(self.elapsed), 60)
        return f"recording: {self.events:,} events  {self.bytes / 1e6:.2f} MB  {self.lost:,} lost  {m:02d}:{s:02d}"


class Recorder:
    """Records a live TraceSession: the trace loop hands it every decoded
    table and calls ``tick`` often; ``finish`` appends the statistics row.

    Container start/stop arrives on the Docker events thread; it is queued
    and written from the loop's thread, because the writer is not thread-safe.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        rotate_size: int | None = None,
        rotate_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        rotate_files: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.rotate_size = rotate_size
        self.rotate_seconds = rotate_seconds
        self.rotate_files = rotate_files
        self.clock = clock
        self.writer: CaptureWriter | None = None
        self.packets = 0
        self.histogram_rows = 0
        self._flows: set[int] = set()
        self._session: Any = None
        self._queue: list[tuple[str, Any, int]] = []
        self._lock = threading.Lock()
        self._started = 0.0

    def check(self) -> None:
        """Fail before any kernel work if the file cannot be created there."""
        if str(self.path) == STDIN:
            if self.rotate_size is not None or self.rotate_seconds is not None or self.rotate_files is not None:
                raise CaptureWriteError("-w -: a stream on standard output cannot be rotated")
            if sys.stdout.isatty():
                raise CaptureWriteError("-w -: standard output is a terminal; pipe it (tracer record -w - | tracer show -)")
            return
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise CaptureWriteError(f"cannot write {self.path}: no directory {parent}")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise CaptureWriteError(f"cannot write {self.path}: {parent} is not writable")

    def start(self, session: Any) -> None:
        self._session = session
        self._started = self.clock()
        # The kernel's journey records are stored as they come (schema 2);
        # the per-sighting build and latency mode write sighting rows.
        journeys = not (getattr(session, "sightings", True) or getattr(session, "latency", False))
        self.writer = CaptureWriter(
            self.path, self._metadata, rotate_size=self.rotate_size, rotate_seconds=self.rotate_seconds, clock=self.clock,
            journeys=journeys, max_files=self.rotate_files,
        )
        session.on_container_event = self._on_container_event

    def _metadata(self) -> dict[str, str]:
        s = self._session
        containers = list(s.inventory.containers) if s.inventory is not None else []
        return {
            "host": socket.gethostname(),
            "kernel": os.uname().release,
            "version": __version__,
            "command": command_line(),
            "filter": s.filter.describe() if s.filter is not None else "",
            "start_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z",
            "ktime_offset_ns": str(s.ctx.boot_offset_ns),
            "containers": json.dumps([container_info(c) for c in containers]),
            "sample": str(getattr(s.options, "sample", 1)),
            "rules": "1" if getattr(s.options, "rules", False) else "0",
        }

    def _on_container_event(self, action: str, container: Any) -> None:
        with self._lock:
            self._queue.append((action, container, self._session.now_ktime()))

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.writer.add_events(table)
        flags = table.column("flags").to_numpy()
        self.packets += int(np.count_nonzero(flags & events.FLAG_NEW_PACKET))
        flows = pc.unique(table.column("flow_id")).to_numpy()
        self._flows.update(flows[flows != 0].tolist())  # nf_conn addresses: bounded by conntrack's table

    def add_records(self, records: np.ndarray) -> None:
        """The kernel's journey records, stored as they are (``add`` takes
        decoded sighting rows)."""
        if not len(records):
            return
        # The session's lock: the places may be rebuilt meanwhile (Docker thread).
        self.writer.add_journeys(records, self._session.ctx, self._session.lock)
        # HOP_NEW_PACKET_BIT is on the hop that gave the packet its id: a
        # record's first (a continuation's first hop is not new).
        self.packets += int(np.count_nonzero(records["hops"]["code"][:, 0] & 0x80))
        flows = np.unique(records["flow_id"])
        self._flows.update(flows[flows != 0].tolist())

    @property
    def flows(self) -> int:
        return len(self._flows)

    def tick(self) -> None:
        self._write_container_rows()
        self.writer.tick()

    def _write_container_rows(self) -> None:
        with self._lock:
            queued, self._queue = self._queue, []
        offset = self._session.ctx.boot_offset_ns
        for action, c, ktime in queued:
            self.writer.add_row(
                "container", ktime, ktime + offset, {"action": action, **container_info(c)},
                container_id=c.id, container_name=c.name, netns=c.netns_inode,
            )

    def add_rules(self, pairs) -> None:
        """Rule hits joined to packets ((packet_id, RuleHit) pairs,
        tracer/rule_join.py) as kind='rule' rows."""
        self.writer.add_rule_rows([(hit.ktime, pid, hit.hook, hit.rule) for pid, hit in pairs],
                                  self._session.ctx.boot_offset_ns)

    def add_histogram(self, end_ktime_ns: int, info: Mapping[str, Any]) -> None:
        """One latency-mode interval (`tracer latency -w`) as a kind='histogram'
        row stamped with the interval's end; see docs/capture-format.md."""
        self.writer.add_row("histogram", end_ktime_ns, end_ktime_ns + self._session.ctx.boot_offset_ns, info)
        self.histogram_rows += 1

    def progress(self, lost: int) -> Progress:
        return Progress(self.writer.event_rows, self.writer.bytes_written, lost, self.clock() - self._started)

    def finish(self, counters: Any) -> dict[str, Any]:
        """Append the statistics row and close the stream; returns the stats."""
        self._write_container_rows()
        ktime = self._session.now_ktime()
        stats = {
            # The kernel's records per emitting sensor: journeys (one per
            # packet, or per part of one), or events in the per-sighting build.
            "events": dict(counters.emitted),
            "lost": dict(counters.lost),
            "record": getattr(counters, "record", "event"),
            "journey_ends": dict(getattr(counters, "journey_ends", {})),
            "event_rows": self.writer.event_rows,  # sightings
            "journey_rows": self.writer.journey_rows,
            **({"rule_rows": self.writer.rule_rows} if self.writer.rule_rows else {}),
            "packets": self.packets,
            "flows": self.flows,
            "duration_s": round(self.clock() - self._started, 3),
        }
        if self.histogram_rows:
            stats["histogram_rows"] = self.histogram_rows
        if getattr(counters, "before_start", 0):
            stats["before_start"] = counters.before_start
        self.writer.add_row("stats", ktime, ktime + self._session.ctx.boot_offset_ns, stats)
        self.close()
        return stats

    def close(self) -> None:
        if self._session is not None:
            self._session.on_container_event = None
        if self.writer is not None:
            self.writer.close()


# --- reading --------------------------------------------------------------------


@dataclass
class Capture:
    """One or more capture files read back, in the order given."""

    paths: list[str]
    table: pa.Table  # CAPTURE_SCHEMA, every file's rows, dictionaries unified
    metadata: dict[str, str]  # the first file's, without the 'tracer.' prefix
    file_metadata: list[dict[str, str]] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)  # warnings about torn/unclosed files

    @cached_property
    def events(self) -> pa.Table:
        """Packet sightings only, in EVENT_SCHEMA."""
        rows = self.table.filter(pc.fill_null(pc.equal(self.table["kind"], "event"), False))
        return rows.select(events.EVENT_SCHEMA.names)

    @cached_property
    def stats(self) -> dict[str, Any] | None:
        """The closing statistics row (the last one if several captures were given)."""
        found = self._info("stats")
        return found[-1] if found else None

    @cached_property
    def histograms(self) -> pa.Table:
        """Latency-mode interval rows (kind='histogram'), all columns; their
        payload is the JSON in ``info`` (docs/capture-format.md)."""
        return self.table.filter(pc.fill_null(pc.equal(self.table["kind"], "histogram"), False))

    @cached_property
    def rules(self) -> list[tuple[int, str, dict[str, Any]]]:
        """Rule hits (kind='rule' rows of a capture recorded with --rules):
        (packet_id, hook, info) each, in file order."""
        return _rule_hits(self.table.filter(pc.fill_null(pc.equal(self.table["kind"], "rule"), False)))

    @property
    def has_rules(self) -> bool:
        """Recorded with --rules (rule rows may still be none)."""
        return self.metadata.get("rules") == "1" or bool(self.rules)

    @cached_property
    def containers(self) -> list[dict[str, Any]]:
        """Container start/die rows during the capture, in file order."""
        return self._info("container")

    def _info(self, kind: str) -> list[dict[str, Any]]:
        rows = self.table.filter(pc.fill_null(pc.equal(self.table["kind"], kind), False))
        return [json.loads(v) for v in rows["info"].to_pylist() if v]


def _meta(schema: pa.Schema, path: str = "") -> dict[str, str]:
    raw = schema.metadata or {}
    prefix = events.META_PREFIX.encode()
    try:
        return {k[len(prefix):].decode(): v.decode() for k, v in raw.items() if k.startswith(prefix)}
    except UnicodeDecodeError:
        raise CaptureReadError(f"{path or 'capture'}: damaged: its metadata is not UTF-8 text") from None


def _check_version(path: str, meta: dict[str, str]) -> None:
    version = meta.get("schema_version")
    if version is None:
        raise CaptureReadError(f"{path}: no tracer metadata: not a tracer capture")
    major = version.split(".")[0]
    if major not in READABLE_MAJORS:
        raise CaptureReadError(
            f"{path}: capture schema version {version} is incompatible with this tracer "
            f"(reads versions {' and '.join(READABLE_MAJORS)})"
        )


# Sighting rows (1) and journey rows (2); both read as sighting rows.
READABLE_MAJORS = (events.SCHEMA_VERSION.split(".")[0], events.JOURNEY_SCHEMA_VERSION.split(".")[0])


def _rows_of(meta: dict[str, str]) -> Callable[[pa.RecordBatch], pa.Table | pa.RecordBatch]:
    """What turns one file's batches, in order, into CAPTURE_SCHEMA rows."""
    if meta.get("schema_version", "").split(".")[0] == events.JOURNEY_SCHEMA_VERSION.split(".")[0]:
        return JourneyRowReader().convert
    return _conform


# Version 1 files have had every column from the start but these.
_V1_LATER = ("tcp_doff",)
_V1_REQUIRED = tuple(n for n in events.CAPTURE_SCHEMA.names if n not in _V1_LATER)


def _conform(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A version 1 batch in CAPTURE_SCHEMA (events.conform)."""
    return events.conform(batch, events.CAPTURE_SCHEMA, _V1_REQUIRED)


STDIN = "-"  # as a capture path: standard input (reading) or output (writing)


def _check_schema(path: str, schema: pa.Schema, meta: dict[str, str]) -> None:
    """A file's columns against the one definition of them (events.py, via
    the same conversion every batch takes), when the file is opened: a
    column missing or of a type that does not convert is one line naming
    it, before any output. Batches are checked again as they are read."""
    try:
        schema.names  # noqa: B018 - decodes every column name
    except UnicodeDecodeError:
        raise CaptureReadError(f"{path}: damaged: its column names are not UTF-8 text") from None
    try:
        _rows_of(meta)(pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema))
    except events.ColumnError as exc:
        raise CaptureReadError(f"{path}: {exc}") from None
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise CaptureReadError(f"{path}: columns not as a capture has them ({one_line(str(exc), 120)})") from None


def _valid(batch: pa.RecordBatch) -> bool:
    """Whether a batch's data agrees with its layout (offsets, dictionary
    indices, lengths). A damaged file can hold a batch that parses but
    points outside its buffers, and Arrow's kernels trust what they are
    given: reading that would crash, not fail."""
    try:
        batch.validate(full=True)
    except (pa.ArrowException, ValueError):
        return False
    return True


class _FileRows:
    """One capture file opened for a single pass: its metadata at once (so
    bad input fails before any output), its batches on demand, and at the
    end a warning if it was torn or not closed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.batches = 0
        self.rows = 0
        self.warning: str | None = None
        self._stdin = None
        if path == STDIN:  # a pipe is read once, as it comes: `tracer record -w - | tracer show -`
            self._stdin = self._stdin_reader()
            self.is_file_format = False
            self.metadata = _meta(self._stdin.schema, "standard input")
            _check_version("standard input", meta=self.metadata)
            _check_schema("standard input", self._stdin.schema, self.metadata)
            return
        f = self._open()
        try:
            self.is_file_format, reader = self._reader(f)
            self.metadata = _meta(reader.schema, path)
            _check_version(path, meta=self.metadata)
            _check_schema(path, reader.schema, self.metadata)
        finally:
            f.close()

    def _open(self):
        try:
            size = os.path.getsize(self.path)
            f = open(self.path, "rb")
        except FileNotFoundError:
            raise CaptureReadError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise CaptureReadError(f"{self.path}: is a directory, not a capture file") from None
        except OSError as exc:
            raise CaptureReadError(f"{self.path}: {exc.strerror or exc}") from None
        if size == 0:
            f.close()
            raise CaptureReadError(f"{self.path}: empty file")
        self.size = size
        return f

    def _stdin_reader(self) -> Any:
        stream = sys.stdin.buffer
        if stream.isatty():
            raise CaptureReadError("-: standard input is a terminal, not a capture (pipe one in: tracer record -w - | tracer show -)")
        try:
            return pa.ipc.open_stream(stream)
        except (pa.ArrowException, OSError):
            raise CaptureReadError("-: standard input is not an Arrow IPC stream (.arrows) capture") from None

    def _stdin_batches(self, rows_of) -> Iterator[pa.RecordBatch]:
        reader, self._stdin = self._stdin, None
        if reader is None:
            raise CaptureReadError("-: standard input can be read only once (save it to a file for this)")
        end = yield from self._stream(reader, rows_of)
        if end != "clean":  # the writer was killed: what came before is kept
            self.warning = f"standard input: recovered {self.batches} batches ({self.rows:,} rows); it ends in a torn batch"

    def _stream(self, reader: Any, rows_of) -> Iterator[pa.RecordBatch]:
        """An IPC stream's batches as CAPTURE_SCHEMA rows, up to its end; returns
        how it ended: "clean", "torn" (a batch cut short) or "damaged" (a
        batch whose data contradicts its own layout: read no further)."""
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return "clean"
            except (pa.ArrowException, OSError, ValueError, MemoryError):  # damaged text or lengths in a batch
                return "torn"
            if not _valid(batch):
                return "damaged"
            yield from self._converted(rows_of, batch)

    def _reader(self, f: Any) -> tuple[bool, Any]:
        head = f.read(8)
        f.seek(0)
        if head.startswith(_ARROW_FILE_MAGIC):
            try:
                return True, pa.ipc.open_file(f)
            except pa.ArrowException:
                raise CaptureReadError(f"{self.path}: truncated or damaged Arrow file") from None
        if not head.startswith(_CONTINUATION):
            raise CaptureReadError(f"{self.path}: not an Arrow IPC stream (.arrows) file")
        try:
            return False, pa.ipc.open_stream(f)
        except (pa.ArrowException, OSError):
            raise CaptureReadError(f"{self.path}: truncated: the file ends inside its schema header") from None

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        """The file's batches as CAPTURE_SCHEMA rows (``_rows_of``: journey
        rows laid out as sightings); a torn tail ends the file (what came
        before is kept) and sets ``warning``."""
        rows_of = _rows_of(self.metadata)
        if self.path == STDIN:
            yield from self._stdin_batches(rows_of)
            return
        f = self._open()
        with f:
            file_format, reader = self._reader(f)
            if file_format:
                try:
                    for i in range(reader.num_record_batches):
                        batch = reader.get_batch(i)
                        if not _valid(batch):
                            raise CaptureReadError(f"{self.path}: batch {i} is damaged")
                        yield from self._converted(rows_of, batch)
                except (pa.ArrowException, ValueError, MemoryError):
                    raise CaptureReadError(f"{self.path}: truncated or damaged Arrow file") from None
                return
            end = yield from self._stream(reader, rows_of)
            torn, damaged = end == "torn", end == "damaged"
            f.seek(max(0, self.size - len(_EOS)))
            clean = not torn and f.read() == _EOS
        if not self.batches and not clean:
            raise CaptureReadError(f"{self.path}: truncated: no complete record batch")
        recovered = f"{self.path}: recovered {self.batches} batches ({self.rows:,} rows)"
        if damaged:
            self.warning = f"{recovered}; the next batch is damaged (its data contradicts its own layout): read no further"
        elif torn:
            self.warning = f"{recovered}; file ends in a torn batch"
        elif not clean:
            self.warning = f"{recovered}; the capture was not stopped cleanly (no end-of-stream marker)"

    def _converted(self, rows_of, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        try:
            rows = rows_of(batch)
        except events.ColumnError as exc:  # a column missing or of another type (BadJourneyRows too)
            raise CaptureReadError(f"{self.path}: {exc}") from None
        self.batches += 1
        for out in (rows.to_batches() if isinstance(rows, pa.Table) else [rows]):
            self.rows += out.num_rows
            yield out


class CaptureStream:
    """Capture files read in one pass, batch by batch, in bounded memory
    (``read_capture`` is this, collected into one table).

    Every file's header is checked when the stream is made, so bad input
    fails before any output. ``sightings()`` yields the packet sightings
    (EVENT_SCHEMA batches, each converted by ``_conform``) and keeps the few
    other rows (container, stats, histogram) aside: ``stats``, ``containers``
    and ``histograms`` are complete once the sightings are consumed.
    Warnings about torn or unclosed files go to ``on_warning`` as each file
    ends and are kept in ``recovered``."""

    def __init__(self, paths: list[str] | str, on_warning: Callable[[str], None] | None = None) -> None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [str(p) for p in paths]
        if not self.paths:
            raise CaptureReadError("no capture files given")
        if self.paths.count(STDIN) > 1:
            raise CaptureReadError("-: standard input can be read only once")
        self._files = [_FileRows(p) for p in self.paths]
        self.file_metadata = [f.metadata for f in self._files]
        self.metadata = self.file_metadata[0]
        self.recovered: list[str] = []
        self.on_warning = on_warning
        self.rows = 0
        self.current = 0  # index of the file the last batch came from
        self._other: list[pa.RecordBatch] = []
        self._rules: list[pa.RecordBatch] = []  # rule rows (--rules) not yet taken
        self._consumed = False

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Every row of every file, in order, in CAPTURE_SCHEMA."""
        if self._consumed:
            raise RuntimeError("a CaptureStream is read once")
        self._consumed = True
        for i, f in enumerate(self._files):
            self.current = i
            for batch in f:
                self.rows += batch.num_rows
                yield batch
            if f.warning:
                self.recovered.append(f.warning)
                if self.on_warning is not None:
                    self.on_warning(f.warning)

    def sightings(self, read_ahead: int = 0) -> Iterator[pa.RecordBatch]:
        """Packet sightings (kind 'event') as EVENT_SCHEMA batches; the other
        rows are kept for ``stats``, ``containers`` and ``histograms``.
        ``read_ahead`` batches are read and decompressed on a thread of
        their own meanwhile (Arrow releases the GIL while it does)."""
        names = events.EVENT_SCHEMA.names
        batches = self.batches() if read_ahead <= 0 else _read_ahead(self.batches(), read_ahead)
        for batch in batches:
            is_event = _is_event(batch.column("kind"))
            if is_event is None:  # every row is a sighting (the common case)
                yield batch.select(names)
                continue
            if not is_event.all():
                other = batch.filter(pa.array(~is_event))
                is_rule = pc.fill_null(pc.equal(other.column("kind"), "rule"), False)
                if pc.any(is_rule).as_py():
                    self._rules.append(other.filter(is_rule))
                    other = other.filter(pc.invert(is_rule))
                if other.num_rows:
                    self._other.append(other)
            if is_event.any():
                yield batch.filter(pa.array(is_event)).select(names)

    def reader(self) -> pa.RecordBatchReader:
        """``sightings()`` as a pyarrow RecordBatchReader (DuckDB, polars and
        pyarrow consume it streaming)."""
        return pa.RecordBatchReader.from_batches(events.EVENT_SCHEMA, self.sightings())

    def presented(self) -> Iterator[pa.RecordBatch]:
        """``sightings()`` in PRESENTED_SCHEMA (signed times, NULL for unknown)."""
        for batch in self.sightings():
            yield presented(batch)

    def presented_reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(PRESENTED_SCHEMA, self.presented())

    def other_rows(self) -> pa.Table:
        """The rows that are not sightings, read so far."""
        return pa.Table.from_batches(self._other, schema=events.CAPTURE_SCHEMA).unify_dictionaries()

    @property
    def has_rules(self) -> bool:
        """Recorded with --rules: `rule` rows come with the sightings."""
        return self.metadata.get("rules") == "1"

    def take_rules(self) -> list[tuple[int, str, dict[str, Any]]]:
        """The rule rows read since the last call, (packet_id, hook, info)
        each, in file order (they are not kept: memory stays bounded)."""
        batches, self._rules = self._rules, []
        return [hit for b in batches for hit in _rule_hits(b)]

    @property
    def stats(self) -> dict[str, Any] | None:
        found = _infos(self.other_rows(), "stats")
        return found[-1] if found else None

    @property
    def containers(self) -> list[dict[str, Any]]:
        return _infos(self.other_rows(), "container")

    @property
    def histograms(self) -> pa.Table:
        rows = self.other_rows()
        return rows.filter(pc.fill_null(pc.equal(rows["kind"], "histogram"), False))


def _read_ahead(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """``items``, produced on another thread up to ``depth`` ahead; an
    exception there is raised here, in order."""
    q: "queue.Queue[tuple[str, Any]]" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(message: tuple[str, Any]) -> bool:
        # Never block for good: the reader may have stopped with the queue
        # full (an exception, Ctrl-C), and its close() joins this thread.
        while not stop.is_set():
            try:
                q.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as exc:  # noqa: BLE001 (handed to the reader)
            put(("error", exc))

    thread = threading.Thread(target=produce, daemon=True, name="tracer-read-ahead")
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


def _is_event(kind: pa.Array) -> np.ndarray | None:
    """Which rows are sightings; None when all of them are."""
    if isinstance(kind, pa.DictionaryArray):
        values = kind.dictionary.to_pylist()
        code = values.index("event") if "event" in values else -1
        if kind.null_count == 0 and len(values) == 1 and code == 0:
            return None
        idx = pc.fill_null(kind.indices, -1).to_numpy()
        return idx == code
    return pc.fill_null(pc.equal(kind, "event"), False).to_numpy(zero_copy_only=False)


def _rule_hits(rows: pa.Table | pa.RecordBatch) -> list[tuple[int, str, dict[str, Any]]]:
    out = []
    for pid, info in zip(rows.column("packet_id").to_pylist(), rows.column("info").to_pylist()):
        info = json.loads(info)
        out.append((pid, info.pop("hook", None), info))
    return out


def _infos(rows: pa.Table, kind: str) -> list[dict[str, Any]]:
    picked = rows.filter(pc.fill_null(pc.equal(rows["kind"], kind), False))
    return [json.loads(v) for v in picked["info"].to_pylist() if v]


def open_capture(paths: list[str] | str, on_warning: Callable[[str], None] | None = None) -> CaptureStream:
    """Capture files for one streaming pass (see ``CaptureStream``)."""
    return CaptureStream(paths, on_warning)


def read_capture(paths: list[str] | str) -> Capture:
    """Read capture files in order into one table (see ``Capture``): for
    captures that fit in memory; ``open_capture`` streams any size."""
    stream = CaptureStream(paths)
    batches = list(stream.batches())
    table = pa.Table.from_batches(batches, schema=events.CAPTURE_SCHEMA).unify_dictionaries()
    return Capture(paths=stream.paths, table=table, metadata=stream.metadata, file_metadata=stream.file_metadata,
                   recovered=stream.recovered)


# --- sightings as other tools should see them -----------------------------------

# What `tracer export --parquet` and `tracer sql` present: the sighting
# columns with plain strings (no dictionaries: polars cannot read a stream's
# dictionary deltas, and Spark/Trino want plain columns), the monotonic clock
# as signed 64-bit (DuckDB's `max - min` of a UBIGINT overflows below zero;
# ktime stays below 2^63), and NULL where the capture writes 0 for "unknown"
# (packet_id, flow_id, skb). Ids stay unsigned: captures written before flow
# ids were shortened hold raw kernel addresses, above 2^63, as skb does.
_SIGNED = ("ktime_ns",)
_ZERO_IS_NULL = ("packet_id", "flow_id", "skb")
PRESENTED_SCHEMA = pa.schema([
    pa.field(f.name, pa.string() if pa.types.is_dictionary(f.type) else pa.int64() if f.name in _SIGNED else f.type)
    for f in events.EVENT_SCHEMA
])


def presented(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A sighting batch (EVENT_SCHEMA) in PRESENTED_SCHEMA."""
    arrays = []
    for f in PRESENTED_SCHEMA:
        col = batch.column(f.name)
        if f.name in _ZERO_IS_NULL:
            col = pc.if_else(pc.equal(col, pa.scalar(0, col.type)), pa.scalar(None, col.type), col)
        arrays.append(col if col.type == f.type else col.cast(f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=PRESENTED_SCHEMA)
